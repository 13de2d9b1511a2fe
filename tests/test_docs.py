"""Every code block of the README and the documentation site runs or is checked, so none rots.

- `python` blocks run page by page, each page in a fresh namespace and an empty folder, in
  the order of the page: as a reader pasting them in order would. All pages share one
  interpreter, so TensorFlow starts once; it starts with the session (conftest.py) and
  runs beside the other tests.
  `--8<-- "path"` lines (pymdownx.snippets) are replaced by the file they name first.
- `bash` lines are checked without running them (most take minutes to hours; what they
  do is tested in test_cli / test_experiments / test_examples): `saliency-detect` lines
  must parse with the command's own parser, `python examples/X.py` lines must name an
  example and flags it defines, `pip install` extras must exist, files must exist.
- `toml` blocks load as experiment configs (`title="explain…"` ones as `explain` configs).
- `text` blocks are output or signatures, not code; any other language is refused.

The API reference pages must name every public object: each subpackage's `__all__`.
"""

from __future__ import annotations

import configparser
import importlib
import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
LANGUAGES = {"python", "bash", "toml", "text"}
FENCE = re.compile(r"^[ \t]*```(?P<info>.*)$")
SNIPPET = re.compile(r'^--8<-- "(?P<path>[^"]+)"\s*$')
SUBPACKAGES = ["data", "models", "saliency", "attacks", "detector", "evaluation", "experiments"]


def _name(page: Path) -> str:
    return str(page.relative_to(REPO)) if page.is_relative_to(REPO) else str(page)


def code_blocks(page: Path) -> list[tuple[str, str, str, int]]:
    """Return `(language, info string, body, line number)` for every fenced block of a page."""
    blocks, lines, i = [], page.read_text(encoding="utf-8").splitlines(), 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        info = opening["info"].strip()
        start, body = i + 1, []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise AssertionError(f"{_name(page)}:{start}: a code block is never closed")
        language = info.split()[0] if info else ""
        code = textwrap.dedent("\n".join(_expand(body)) + "\n")  # blocks inside list items are indented
        blocks.append((language, info, code, start))
        i += 1
    return blocks


def _expand(body: list[str]) -> list[str]:
    out = []
    for line in body:
        snippet = SNIPPET.match(line)
        out.extend((REPO / snippet["path"]).read_text(encoding="utf-8").splitlines() if snippet else [line])
    return out


def _pages_with(language: str) -> list[Path]:
    return [page for page in PAGES if any(block[0] == language for block in code_blocks(page))]


def test_every_code_block_has_a_known_language():
    for page in PAGES:
        for language, _, _, line in code_blocks(page):
            assert language in LANGUAGES, (
                f"{_name(page)}:{line}: code blocks must be one of {sorted(LANGUAGES)} so a test can "
                f"run or check them; got {language or 'no language'!r}"
            )


def test_the_harness_reads_fences_and_snippets(tmp_path):
    page = tmp_path / "page.md"
    page.write_text('Text\n\n```python title="x"\nx = 1\n--8<-- "setup.cfg"\n```\n\n```text\nout\n```\n')
    (python, info, body, line), (text, *_) = code_blocks(page)
    assert (python, info, line, text) == ("python", 'python title="x"', 3, "text")
    assert body.startswith("x = 1\n[metadata]")
    page.write_text("```python\nnever closed\n")
    with pytest.raises(AssertionError, match="never closed"):
        code_blocks(page)


# The runner: one interpreter for every page (TensorFlow starts once), but each page gets
# a fresh namespace and an empty folder, so no page leans on another. Each block is
# compiled under its page and line, so a failure names them.
RUNNER = """
import contextlib, io, json, os, sys, tempfile, traceback
out = sys.argv[1]
with open(sys.argv[2]) as file:
    pages = json.load(file)
results = {}
for page, blocks in pages:
    os.chdir(tempfile.mkdtemp(prefix="page-"))
    namespace, printed, ran = {"__name__": "__main__"}, io.StringIO(), 0
    try:
        with contextlib.redirect_stdout(printed):
            for where, code in blocks:
                exec(compile(code, where, "exec"), namespace)
                ran += 1
        results[page] = {"ran": ran, "log": printed.getvalue()[-2000:]}
    except BaseException:
        results[page] = {"ran": ran, "log": printed.getvalue()[-2000:] + traceback.format_exc()}
    with open(out, "w") as file:
        json.dump(results, file)
"""


def _python_pages() -> list[tuple[str, list[tuple[str, str]]]]:
    return [
        (_name(page), [(f"{_name(page)}:{line}", body) for language, _, body, line in code_blocks(page)
                       if language == "python"])
        for page in _pages_with("python")
    ]  # fmt: skip


def start_runner(folder: Path) -> subprocess.Popen:
    """Start the runner on every page's `python` blocks; results go to `folder`.

    conftest.py starts it when the session begins, so that the pages (about 4 minutes,
    much of it single-threaded tracing) run beside the other tests instead of after
    them. Output goes to a file, not a pipe, so a chatty page can never block it.
    """
    (folder / "pages.json").write_text(json.dumps(_python_pages()))
    with open(folder / "output.txt", "w") as output:
        return subprocess.Popen(
            [sys.executable, "-c", RUNNER, str(folder / "results.json"), str(folder / "pages.json")],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, "MPLBACKEND": "Agg"},
        )


BACKGROUND: tuple[subprocess.Popen, Path] | None = None  # set by conftest.py


@pytest.fixture(scope="module")
def page_runs(tmp_path_factory) -> dict[str, dict]:
    """What each page's `python` blocks ran and printed (waiting for the background runner)."""
    if BACKGROUND is None:
        folder = tmp_path_factory.mktemp("docs")
        process = start_runner(folder)
    else:
        process, folder = BACKGROUND
    try:
        returncode = process.wait(timeout=1800)
    except subprocess.TimeoutExpired:
        process.kill()
        returncode = "killed after 30 minutes"
    out = folder / "results.json"
    runs = json.loads(out.read_text()) if out.is_file() else {}
    for page, blocks in _python_pages():
        output = (folder / "output.txt").read_text(errors="replace")[-3000:]
        runs.setdefault(page, {"ran": 0, "log": f"the runner stopped (exit {returncode}):\n{output}"})
        runs[page]["expected"] = len(blocks)
    return runs


@pytest.mark.parametrize("page", _pages_with("python"), ids=_name)
def test_python_blocks_run(page, page_runs):
    run = page_runs[_name(page)]
    assert run["ran"] == run["expected"], f"{_name(page)}: block {run['ran'] + 1} failed\n{run['log']}"


def _commands(body: str) -> list[list[str]]:
    """Shell lines of a block, continuation lines joined, comments dropped, split at `&&`."""
    commands = []
    for line in body.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        while words:
            cut = words.index("&&") if "&&" in words else len(words)
            commands.append(words[:cut])
            words = words[cut + 1 :]
    return commands


def _extras() -> set[str]:
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    return set(config["options.extras_require"])


def check_command(words: list[str]) -> None:
    """Raise AssertionError if a documented shell command would not run as written."""
    from saliency_detect.cli._main import build_parser

    while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):  # VAR=value command
        words = words[1:]
    if not words:
        return
    program, args = words[0], words[1:]
    if program == "saliency-detect":
        try:
            build_parser().parse_args(args)
        except SystemExit as exit_:
            raise AssertionError(f"`saliency-detect {shlex.join(args)}` does not parse") from exit_
    elif program == "python" and args and args[0].endswith(".py"):
        script = REPO / args[0]
        assert script.is_file(), f"no script {args[0]}"
        source = script.read_text(encoding="utf-8")
        for flag in (a.split("=")[0] for a in args[1:] if a.startswith("--")):
            assert f'"{flag}"' in source, f"{args[0]} defines no {flag}"
    elif program == "pip":
        for extra in re.findall(r"\.\[([\w,-]+)\]", " ".join(args)):
            assert set(extra.split(",")) <= _extras(), f"setup.cfg has no extra {extra!r}"
    elif program == "bash":
        assert (REPO / args[0]).is_file(), f"no script {args[0]}"
    else:
        known = {"export", "pytest", "mkdocs", "cd", "git", "python"}
        assert program in known, f"the docs test does not know how to check `{program}`; teach it"


@pytest.mark.parametrize("page", _pages_with("bash"), ids=_name)
def test_shell_commands_are_valid(page):
    for language, _, body, line in code_blocks(page):
        if language != "bash":
            continue
        for words in _commands(body):
            try:
                check_command(words)
            except AssertionError as error:
                raise AssertionError(f"{_name(page)}:{line}: {error}") from None


def test_the_command_check_catches_rot():
    check_command(["saliency-detect", "attack", "--model", "f.keras", "--attack", "bim", "--out", "a.h5"])
    for words in (
        ["saliency-detect", "attack", "--no-such-flag"],
        ["python", "examples/quickstart.py", "--no-such-flag"],
        ["pip", "install", ".[no-such-extra]"],
        ["rm", "-rf", "/"],
    ):
        with pytest.raises(AssertionError):
            check_command(words)
    assert _commands("pip install . && saliency-detect demo  # x\nexport A=1 \\\n  B=2\n") == [
        ["pip", "install", "."],
        ["saliency-detect", "demo"],
        ["export", "A=1", "B=2"],
    ]


@pytest.mark.parametrize("page", _pages_with("toml"), ids=_name)
def test_toml_blocks_are_valid_configs(page, tmp_path):
    from saliency_detect.experiments import ExperimentConfig, ExplainConfig, load_config

    for language, info, body, line in code_blocks(page):
        if language != "toml":
            continue
        path = tmp_path / f"line{line}.toml"
        path.write_text(body, encoding="utf-8")
        kind = "attention" if "explain" in info else "detection"
        config = load_config(path, kind=kind)
        assert isinstance(config, ExplainConfig if kind == "attention" else ExperimentConfig)


@pytest.mark.parametrize("subpackage", SUBPACKAGES)
def test_the_api_reference_names_every_public_object(subpackage):
    exported = set(importlib.import_module(f"saliency_detect.{subpackage}").__all__)
    page = (REPO / "docs" / "api" / f"{subpackage}.md").read_text(encoding="utf-8")
    documented = {
        target.split(".")[-1]
        for target in re.findall(rf"^::: saliency_detect\.{subpackage}\.([\w.]+)\s*$", page, re.M)
    }
    assert documented == exported, (
        f"docs/api/{subpackage}.md misses {sorted(exported - documented)} "
        f"and names {sorted(documented - exported)} that `__all__` does not export"
    )


def test_every_test_the_reliability_page_cites_exists():
    """`docs/reliability.md` names the test behind each guarantee; a renamed test must not go stale."""
    text = (REPO / "docs" / "reliability.md").read_text()
    cited, current = [], None
    for match in re.finditer(r"`(tests/[\w/]+\.py)?::(\w+)`", text):
        current = match.group(1) or current
        cited.append((current, match.group(2)))
    assert len(cited) >= 20
    for path, name in cited:
        source = (REPO / path).read_text()
        assert re.search(rf"^def {name}\(", source, flags=re.M), f"{path}::{name} is cited but does not exist"
