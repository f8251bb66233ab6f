"""What ``eupe-export --out`` may write into: a new or empty folder, or an earlier export of the same weights.

Anything else (files eupe-export did not write, or the export of other weights) is refused before
anything is written, unless the user passes ``--force``; even then only the export's own file
names are overwritten and nothing is deleted.
"""

from __future__ import annotations

import json
from pathlib import Path

from eupe.deploy.model_card import CARD_JSON, CARD_MD
from eupe.deploy.timm_export import CONFIG_FILENAME, SAFETENSORS_FILENAME

OWN_FILES = frozenset({CONFIG_FILENAME, SAFETENSORS_FILENAME, CARD_MD, CARD_JSON, "MODEL_CARD.md"})


class ExportFolderError(ValueError):
    """``--out`` holds files that an export would overwrite or mix with."""


def _card(out: Path) -> dict | None:
    try:
        card = json.loads((out / CARD_JSON).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return card if isinstance(card, dict) and str(card.get("format", "")).startswith("eupe-model-card") else None


def foreign_files(out: Path, weights_sha256: str) -> tuple[list[str], str | None]:
    """(entries of ``out`` an earlier export of these weights did not write, the sha256 of other
    weights exported there, if any)."""
    if not out.is_dir():
        return [], None
    entries = sorted(p.name for p in out.iterdir())
    card = _card(out)
    if card is None:
        return entries, None
    own = OWN_FILES | {a.get("artifact") for a in card.get("artifacts", []) if isinstance(a, dict)}
    other = card.get("student", {}).get("weights_sha256")
    return [e for e in entries if e not in own or not (out / e).is_file()], (other if other != weights_sha256 else None)


def check_out_dir(out: str | Path, weights_sha256: str, force: bool) -> None:
    """ExportFolderError (naming the files and the fix) unless ``out`` may take this export."""
    out = Path(out)
    if force:
        return
    foreign, other = foreign_files(out, weights_sha256)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise ExportFolderError(
            f"--out {out} already holds files eupe-export did not write ({shown}); choose a new or empty folder, "
            f"or pass --force to write the export's files there (others are kept, same names overwritten)")
    if other:
        raise ExportFolderError(
            f"--out {out} holds the export of other weights (sha256 {other[:16]}...); choose a new folder, or pass "
            f"--force to overwrite that export")


def previous_license(out: str | Path, weights_sha256: str) -> str | None:
    """The licence an earlier export of the same weights in ``out`` was given (kept when --license is not)."""
    card = _card(Path(out))
    if card is None or card.get("student", {}).get("weights_sha256") != weights_sha256:
        return None
    license_ = card.get("hub", {}).get("license")
    return license_ if isinstance(license_, str) else None
