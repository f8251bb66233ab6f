"""The docs cannot rot: README.md and docs/*.md are held to the code.

- every ``eupe-*`` command in a code block (also ``python -m eupe.<app>.cli`` / ``accelerate launch
  -m ...``) names a real subcommand and real flags of the click command behind the console script
  (``pyproject.toml [project.scripts]``);
- a sample of ``--help``s actually runs (subprocess);
- every ``make X`` in code names a target of the Makefile;
- every relative link and ``#anchor`` resolves;
- every Python snippet imports from the module that defines a name, never from a package;
- the codec table of docs/cache.md lists the codec registry's names, in its order;
- and the checkers themselves catch a bad flag, a bad subcommand, a bad target and a bad link.
"""

from __future__ import annotations

import importlib
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$", re.M)
SHELL = {"", "bash", "sh", "shell", "console"}


def scripts() -> dict[str, str]:
    """Console script name -> module holding its click command (``cli``)."""
    table = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    return {name: target.split(":")[0] for name, target in table.items()}


SCRIPTS = scripts()
MODULES = {module: name for name, module in SCRIPTS.items()}


def command_of(script: str) -> click.Command:
    return importlib.import_module(SCRIPTS[script]).cli


# -- reading the pages ---------------------------------------------------------------------------

def blocks(text: str) -> list[tuple[str, str]]:
    """(language, code) of every fenced block."""
    return FENCE.findall(text)


def prose(text: str) -> str:
    """The text outside fenced blocks."""
    return FENCE.sub("", text)


def shell_lines(text: str) -> list[str]:
    """Logical lines of the shell blocks (backslash continuations joined)."""
    lines = []
    for lang, code in blocks(text):
        if lang in SHELL:
            lines += code.replace("\\\n", " ").splitlines()
    return lines


def commands_in(line: str) -> list[list[str]]:
    """Every eupe command on a shell line, as argv starting with the console script's name."""
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError:
        return []
    found, i = [], 0
    while i < len(tokens):
        name = os.path.basename(tokens[i])
        if name in SCRIPTS:
            start, script = i + 1, name
        elif tokens[i] == "-m" and i + 1 < len(tokens) and tokens[i + 1] in MODULES:
            start, script = i + 2, MODULES[tokens[i + 1]]
        else:
            i += 1
            continue
        end = start
        while end < len(tokens) and tokens[end] not in ("|", "&&", "||", ";"):
            end += 1
        found.append([script, *tokens[start:end]])
        i = end
    return found


def documented_commands() -> list[tuple[str, list[str]]]:
    """(page, argv) for every eupe command in a code block of README.md and docs/."""
    return [(page.relative_to(ROOT).as_posix(), argv) for page in PAGES
            for line in shell_lines(page.read_text()) for argv in commands_in(line)]


# -- the checkers --------------------------------------------------------------------------------

def check_command(argv: list[str]) -> list[str]:
    """What is wrong with ``argv`` against the real click command (empty: nothing)."""
    script, args = argv[0], list(argv[1:])
    command = command_of(script)
    ctx = click.Context(command, info_name=script)
    path = script
    while isinstance(command, click.Group) and args and not args[0].startswith("-"):
        name = args.pop(0)
        sub = command.get_command(ctx, name)
        if sub is None:
            return [f"{path}: no subcommand {name!r} (has: {', '.join(command.list_commands(ctx))})"]
        path, command = f"{path} {name}", sub
        ctx = click.Context(sub, info_name=name, parent=ctx)
    known = {opt for param in command.get_params(ctx) for opt in (*param.opts, *param.secondary_opts)}
    problems = []
    for token in args:
        if token.startswith("-") and len(token) > 1 and not re.fullmatch(r"-\d[\d.e-]*", token):
            flag = token.split("=", 1)[0]
            if flag not in known:
                problems.append(f"{path}: no option {flag!r}")
    return problems


def makefile_targets(makefile: Path = ROOT / "Makefile") -> set[str]:
    targets = set()
    for line in makefile.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.$()/-][^:=\s]*(?:\s+[^:=\s]+)*)\s*:(?!=)", line)
        if match:
            targets.update(match.group(1).split())
    return targets


def make_targets_in(text: str) -> list[str]:
    """Every ``make X`` in code (fenced blocks and inline code spans)."""
    code = [c for _, c in blocks(text)] + INLINE.findall(prose(text))
    return [m.group(1) for chunk in code for m in re.finditer(r"(?:^|[\s;&(])make\s+([A-Za-z][\w.-]*)", chunk)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for _, title in HEADING.findall(prose(page.read_text())):
        base = slug(title)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def check_links(page: Path) -> list[str]:
    """Every relative link of ``page`` that does not resolve (file or #anchor)."""
    text = INLINE.sub("", prose(page.read_text()))
    problems = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        where, _, anchor = target.partition("#")
        path = (page.parent / where).resolve() if where else page
        if not path.exists():
            problems.append(f"{page.name}: link to missing {where!r}")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            problems.append(f"{page.name}: no anchor #{anchor} in {path.name}")
    return problems


def package_imports(code: str) -> list[str]:
    """``from eupe.X import ...`` lines of a snippet whose ``eupe.X`` is a package, not a module."""
    bad = []
    for module in re.findall(r"^\s*from\s+(eupe(?:\.\w+)*)\s+import\s", code, flags=re.M):
        if (ROOT / Path(*module.split("."))).is_dir():
            bad.append(module)
    return bad


# -- the docs ------------------------------------------------------------------------------------

def test_the_pages_exist_and_readme_is_short():
    names = {p.name for p in PAGES}
    for page in ("README.md", "cache.md", "training.md", "export.md", "evaluation.md", "object-storage.md",
                 "benchmarks.md", "design.md", "glossary.md", "contributing.md"):
        assert page in names, page
    assert len((ROOT / "README.md").read_text().splitlines()) < 200
    for page in PAGES:
        assert "DESIGN §" not in page.read_text(), f"{page.name} cites a design brief that is not in the repo"


def test_docs_show_every_console_script():
    used = {argv[0] for _, argv in documented_commands()}
    assert used >= {"eupe-cache", "eupe-train", "eupe-export", "eupe-eval", "eupe-demo"}, used
    assert len(documented_commands()) >= 30


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_documented_command_has_real_subcommands_and_flags(page):
    problems = [f"{' '.join(argv)}\n    -> {problem}" for line in shell_lines(page.read_text())
                for argv in commands_in(line) for problem in check_command(argv)]
    assert not problems, "\n".join(problems)


HELP_SAMPLE = [["eupe-cache"], ["eupe-cache", "extract"], ["eupe-train"], ["eupe-export"],
               ["eupe-eval", "suite"], ["eupe-demo"]]


@pytest.mark.parametrize("argv", HELP_SAMPLE, ids=" ".join)
def test_help_runs(argv):
    """The console script (or its module) answers --help; every flag the docs use with it is listed."""
    script = Path(sys.executable).parent / argv[0]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    module = SCRIPTS[argv[0]]
    code = f"import sys; from {module} import main; sys.exit(main(sys.argv[1:]))"
    cmd = [str(script), *argv[1:], "--help"] if script.exists() else [sys.executable, "-c", code, *argv[1:], "--help"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"Usage: {' '.join(argv)}"), done.stdout[:200]
    flags = {token.split("=")[0] for _, documented in documented_commands()
             if documented[:len(argv)] == argv and (len(argv) > 1 or len(documented) == 1 or
                                                   not isinstance(command_of(argv[0]), click.Group))
             for token in documented[len(argv):] if token.startswith("--")}
    for flag in flags:
        assert flag in done.stdout, f"{' '.join(argv)} --help does not list {flag}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_make_target_exists(page):
    targets = makefile_targets()
    missing = [t for t in make_targets_in(page.read_text()) if t not in targets]
    assert not missing, f"{page.name}: make {missing} not in the Makefile ({sorted(targets)})"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_and_anchor_resolves(page):
    problems = check_links(page)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_python_snippets_import_from_defining_modules(page):
    bad = [m for lang, code in blocks(page.read_text()) if lang == "python" for m in package_imports(code)]
    assert not bad, f"{page.name}: import from the defining module, not the package: {bad}"


# -- the checkers can fail -----------------------------------------------------------------------

def test_command_checker_catches_bad_flags_and_subcommands():
    assert check_command(["eupe-cache", "extract", "--teacher", "x", "--out", "s.zarr", "--views", "4"]) == []
    assert check_command(["eupe-train", "--stage", "2", "--config", "c.yaml", "optim.lr=1e-4"]) == []
    assert check_command(["eupe-eval", "zeroshot", "--model", "pecore_g", "--set", "templates=simple"]) == []
    assert check_command(["eupe-cache", "extract", "--no-such-flag", "1"]) == [
        "eupe-cache extract: no option '--no-such-flag'"]
    assert check_command(["eupe-cache", "extrakt", "--teacher", "x"])[0].startswith(
        "eupe-cache: no subcommand 'extrakt'")
    assert check_command(["eupe-export", "--checkpoint", "run", "--formats", "onnx"]) == [
        "eupe-export: no option '--formats'"]
    assert commands_in("accelerate launch --num_processes 8 -m eupe.train.cli --stage 2 --bogus  # note") == \
        [["eupe-train", "--stage", "2", "--bogus"]]
    assert check_command(commands_in(".venv/bin/eupe-demo --out d --scael 5")[0]) == ["eupe-demo: no option '--scael'"]


def test_link_and_make_checkers_catch_bad_links_and_targets(tmp_path):
    (tmp_path / "Makefile").write_text("test: x\n\techo\nx := 1\n")
    assert makefile_targets(tmp_path / "Makefile") == {"test"}
    assert make_targets_in("run `make test`, then\n```bash\nmake demo  # x\n```\n") == ["demo", "test"]
    (tmp_path / "b.md").write_text("# Title here\n\n## Codecs (`--codec`, default `compact`)\n")
    page = tmp_path / "a.md"
    page.write_text("[ok](b.md#title-here) [ok](b.md#codecs---codec-default-compact) [ok](#local)\n"
                    "[gone](c.md) [bad](b.md#nope) [bad](#nowhere) [web](https://example.com/x)\n"
                    "`[not a link](d.md)`\n\n## Local\n```\n[in code](e.md)\n```\n")
    assert check_links(page) == ["a.md: link to missing 'c.md'", "a.md: no anchor #nope in b.md",
                                 "a.md: no anchor #nowhere in a.md"]


def test_snippet_import_checker_catches_package_imports():
    code = "from eupe.store import FeatureStore\nfrom eupe.store.store import FeatureStore\n"
    assert package_imports(code) == ["eupe.store"]
    assert package_imports("import zarr\nfrom eupe.models.teachers import create_teacher\n") == []


def codec_table_names(text: str) -> list[str]:
    """The codec names, in row order, of the table under ``## Codecs`` (first column, backticked)."""
    section = text.split("\n## Codecs\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([\w-]+)` \|", section, re.M)


def test_the_codec_table_is_the_registry():
    """docs/cache.md's codec table lists exactly the registry's names, in its order."""
    from eupe.store.codecs.registry import codec_names

    assert codec_table_names((ROOT / "docs" / "cache.md").read_text()) == codec_names()


def test_codec_table_checker_sees_a_missing_row():
    text = (ROOT / "docs" / "cache.md").read_text().replace("| `int6` |", "| int6 |")
    from eupe.store.codecs.registry import codec_names

    assert codec_table_names(text) != codec_names()
