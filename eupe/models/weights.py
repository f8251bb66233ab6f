"""Finding model weights on local disk, and fingerprinting them.

Model hubs are not assumed reachable. A weights file comes, in order, from an explicit
path (``--weights``), from a file shipped inside an installed Python package, or from a
local Hugging Face cache. When none is there, ``MissingWeightsError`` names the file that
was expected and how to supply it. The fingerprint of a weights file is its sha256, which
the feature store records so that a cache built with other weights is refused.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

HF_FILENAMES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")


class MissingWeightsError(FileNotFoundError):
    """No weights file could be found; the message says what was expected and the fix."""


class WeightsFileError(ValueError):
    """A weights file exists but is refused: not a plain tensor checkpoint, not the file kind
    expected, or metadata asking for something outside the allowed architecture keywords."""


NOT_PLAIN = ("is not a plain tensor checkpoint (torch.load with weights_only=True refused it: it holds "
             "pickled Python objects); convert it to safetensors or a state dict of tensors")


def load_tensor_file(path: str | Path) -> dict:
    """A torch checkpoint of plain tensors (weights_only); WeightsFileError for anything else."""
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise WeightsFileError(f"{path} {NOT_PLAIN}") from None


@dataclass(frozen=True)
class WeightsSource:
    """Where an encoder's weights normally live.

    Exactly one of ``hf_repo`` (a Hugging Face repo id, looked up in the local cache),
    ``package`` + ``package_file`` (a file inside an installed package) or ``checkpoint``
    (a file or run directory produced by this toolkit) describes it. ``checkpoint_file`` is
    the file looked for when an explicit path is a directory (a run directory).
    """

    hf_repo: str | None = None
    package: str | None = None
    package_file: str | None = None
    install_hint: str = ""
    checkpoint: str | None = None
    checkpoint_file: str | None = None

    def describe(self) -> str:
        if self.hf_repo:
            return f"hf:{self.hf_repo}"
        if self.package:
            return f"package:{self.package}/{self.package_file}"
        return f"checkpoint:{self.checkpoint}"


def package_file(package: str, relative: str) -> Path | None:
    """Path of a file inside an installed package, without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    return path if path.is_file() else None


def hf_cached_file(repo_id: str) -> Path | None:
    """A weights file of ``repo_id`` in the local Hugging Face cache, if present."""
    from huggingface_hub import try_to_load_from_cache

    for filename in HF_FILENAMES:
        found = try_to_load_from_cache(repo_id, filename)
        if isinstance(found, str) and os.path.isfile(found):
            return Path(found)
    return None


def locate(source: WeightsSource, explicit: str | Path | None) -> Path | None:
    """The weights file to use, or None when none is available (no error)."""
    if explicit is not None:
        path = Path(explicit)
        if path.is_dir() and source.checkpoint_file:
            path = path / source.checkpoint_file
        return path if path.exists() else None
    if source.package and source.package_file:
        return package_file(source.package, source.package_file)
    if source.hf_repo:
        return hf_cached_file(source.hf_repo)
    return None


def require(source: WeightsSource, explicit: str | Path | None, model: str) -> Path:
    """The weights file to use; raises MissingWeightsError naming what is missing and the fix."""
    path = locate(source, explicit)
    if path is not None:
        return path
    if explicit is not None:
        if Path(explicit).is_dir() and source.checkpoint_file:
            raise MissingWeightsError(f"weights for {model!r}: {explicit} has no {source.checkpoint_file}; "
                                      f"pass {source.checkpoint}")
        raise MissingWeightsError(f"weights for {model!r}: {explicit} does not exist")
    if source.package:
        raise MissingWeightsError(
            f"weights for {model!r}: expected {source.package_file} inside the installed package "
            f"{source.package!r}; install it with `{source.install_hint}` or pass --weights PATH"
        )
    if source.hf_repo:
        raise MissingWeightsError(
            f"weights for {model!r}: expected model.safetensors of {source.hf_repo} in the local "
            f"Hugging Face cache ({_hf_cache_dir()}); download it on a machine with hub access "
            f"(`hf download {source.hf_repo}`: the `hf` CLI of huggingface_hub) or pass "
            f"--weights /path/to/model.safetensors"
        )
    raise MissingWeightsError(
        f"weights for {model!r}: pass --weights with {source.checkpoint or 'a checkpoint file'}"
    )


def _hf_cache_dir() -> str:
    from huggingface_hub.constants import HF_HUB_CACHE

    return str(HF_HUB_CACHE)


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """sha256 of a file (or of every file under a directory, in sorted order), memoized by mtime."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _SHA_CACHE:
        digest = hashlib.sha256()
        for file in files:
            with open(file, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 22), b""):
                    digest.update(block)
        _SHA_CACHE[key] = digest.hexdigest()
    return _SHA_CACHE[key]


def state_dict_sha256(module: torch.nn.Module) -> str:
    """sha256 over a module's parameters and buffers (names, dtypes, shapes and bytes)."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
