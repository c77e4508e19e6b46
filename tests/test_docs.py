"""Docs that cannot drift: the reference pages are what the code generates, every YAML block
loads, the tutorial runs as written, the site builds strictly, and the README reaches every page."""

import glob
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import MLTRAIN, REPO
from mltrain.checkpoint import ENTRIES
from mltrain.config import load_config
from mltrain.errors import UserError
from mltrain.run_dir import RUN_FILES
from mltrain.sweep.space import check_space, parse_space
from mltrain.sweep.sweep_file import read_sweep_file

DOCS = REPO / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
# ```yaml title="my_sweep.yaml"  (the title is optional; a fence may be indented, in a list)
FENCE = re.compile(r"^( *)(```|~~~)(\w*)([^\n]*)\n(.*?)^\1\2", re.MULTILINE | re.DOTALL)
LANGUAGES = {"yml": "yaml", "sh": "bash", "shell": "bash"}
SNIPPET = re.compile(r'^--8<-- "([^"]+)"$')


def _reference_pages():
    spec = importlib.util.spec_from_file_location("reference_pages", REPO / "scripts" / "reference_pages.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def code_blocks(page: Path) -> list[tuple[str, str, str, int]]:
    """(language, title, text, line) of each fenced block, snippets (`--8<-- "file"`) read in."""
    blocks = []
    page_text = page.read_text(encoding="utf-8")
    for match in FENCE.finditer(page_text):
        indent, _, language, attributes, text = match.groups()
        language = LANGUAGES.get(language, language)
        text = "\n".join(line[len(indent):] for line in text.splitlines()) + "\n"
        title = re.search(r'title="([^"]+)"', attributes)
        included = SNIPPET.match(text.strip())
        if included:
            text = (REPO / included.group(1)).read_text(encoding="utf-8")
        blocks.append((language, title.group(1) if title else "", text, page_text.count("\n", 0, match.start()) + 1))
    return blocks


def test_the_reference_pages_are_what_the_code_generates():
    stale = _reference_pages().differing_pages()
    assert not stale, f"regenerate with `python scripts/reference_pages.py`: {stale}"


YAML_PAGES = [page for page in [REPO / "README.md", *PAGES] if any(block[0] == "yaml" for block in code_blocks(page))]


@pytest.mark.parametrize("page", YAML_PAGES, ids=[str(page.relative_to(REPO)) for page in YAML_PAGES])
def test_every_yaml_block_loads(page, tmp_path, monkeypatch):
    """Each YAML block is a whole config (or a sweep file) that the loader accepts; the page's
    Python blocks with a file title (`my_pkg/nets.py`) are written first, for configs naming them."""
    blocks = code_blocks(page)
    for language, title, text, _ in blocks:
        if language == "python" and title:
            (tmp_path / title).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / title).write_text(text)
    (tmp_path / "configs").symlink_to(REPO / "configs")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        for language, title, text, line in blocks:
            if language != "yaml":
                continue
            path = tmp_path / f"block-at-line-{line}.yaml"
            path.write_text(text)
            try:
                sweep = read_sweep_file(path)
                if sweep is None:
                    load_config(path)
                else:
                    check_space(parse_space(sweep.search), lambda overrides: load_config(sweep.config, overrides))
            except UserError as error:
                pytest.fail(f"{page.relative_to(REPO)}: the YAML block at line {line}: {error}", pytrace=False)
    finally:  # the page's own modules (my_pkg...) go; mltrain's stay as they were
        for name in [name for name, module in sys.modules.items()
                     if str(getattr(module, "__file__", None) or "").startswith(str(tmp_path))]:
            del sys.modules[name]


SHELL_SYNTAX = set("|&;<>()$`*?{}~")  # what only a shell can run: pipes, redirections, expansions


def shell_commands(script: str) -> list[tuple[str, list[str]]]:
    """(text, words) of each command of a bash script: quoted newlines and continued lines joined."""
    commands, pending = [], ""
    for line in script.splitlines():
        pending += line + "\n"
        if pending.rstrip().endswith("\\"):
            continue
        try:
            words = shlex.split(pending, comments=True)
        except ValueError:  # an open quote: the command goes on
            continue
        if words:
            commands.append((pending, words))
        pending = ""
    assert not pending.strip(), f"unfinished command: {pending}"
    return commands


def test_the_tutorial_runs_as_written(tmp_path, monkeypatch, cli):
    """Every command of the tutorial's bash blocks, in order, in a fresh directory with the shipped
    configs: the `mltrain ...` lines through the command line's own entry point in this process
    (each would otherwise pay a Python and torch start-up), any other line, or an mltrain line with
    shell syntax, through bash. Then the run it made holds only documented files, and its checkpoint
    the documented entries."""
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    environment = {**os.environ, "PATH": f"{Path(MLTRAIN).parent}{os.pathsep}{os.environ['PATH']}",
                   "MPLBACKEND": "Agg"}
    script = "\n".join(text for language, _, text, _ in code_blocks(DOCS / "tutorial.md") if language == "bash")
    stdout = ""
    for text, words in shell_commands(script):
        shell_only = words[0] != "mltrain" or any(character in SHELL_SYNTAX for character in
                                                  re.sub(r"'[^']*'|\"[^\"]*\"", "", text)) \
            or any(glob.glob(word) for word in words if "[" in word)  # model.hidden=[32] is no pattern here
        if shell_only:
            done = subprocess.run(["bash", "-euo", "pipefail", "-c", text], cwd=tmp_path, env=environment,
                                  capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, f"{text}\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
            stdout += done.stdout
        else:
            result = cli(*words[1:])
            assert result.exit_code == 0, f"{text}\n{result.output[-3000:]}\n{result.exception!r}"
            stdout += result.stdout
    assert "export/best.onnx" in stdout and (tmp_path / "compare-val-loss.png").is_file()

    run = tmp_path / "runs" / "quickstart"
    files = [str(path.relative_to(run)) for path in run.rglob("*") if path.is_file()]
    patterns = {name: re.compile(re.escape(name).replace(r"\*", ".*") + "$") for name in RUN_FILES}
    undocumented = [file for file in files if not any(pattern.match(file) for pattern in patterns.values())]
    assert not undocumented, f"add these to run_dir.RUN_FILES: {undocumented}"
    elsewhere = {"tensorboard/*", "mlflow.json", "checkpoints/last-*/*"}  # the tutorial's runs: no logger, no fsdp
    never_written = [name for name, pattern in patterns.items()
                     if name not in elsewhere and not any(pattern.match(file) for file in files)]
    assert not never_written, f"run_dir.RUN_FILES lists files the tutorial's run does not have: {never_written}"
    checkpoint = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert set(checkpoint) == set(ENTRIES)


def test_the_docs_site_builds_strictly(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
                          cwd=REPO, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "reference" / "config" / "index.html").is_file()


def test_the_readme_is_short_and_reaches_every_page():
    readme = REPO / "README.md"
    assert len(readme.read_text(encoding="utf-8").splitlines()) <= 200
    reached, waiting = set(), [readme]
    while waiting:
        page = waiting.pop()
        if page in reached or not page.is_file():
            continue
        reached.add(page)
        for target in re.findall(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            if "://" not in target:
                assert (page.parent / target).is_file(), f"{page.relative_to(REPO)} links to {target}, which is missing"
                waiting.append((page.parent / target).resolve())
    unreachable = [str(page.relative_to(REPO)) for page in PAGES if page.resolve() not in reached]
    assert not unreachable, f"no link leads here from README.md: {unreachable}"


def _command_lines(text: str) -> list[str]:
    """The `mltrain ...` commands of a bash block, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [line.split(" #", 1)[0].strip() for line in joined.splitlines() if line.strip().startswith("mltrain ")]


COMMAND_PAGES = [REPO / "README.md", *PAGES]


@pytest.mark.parametrize("page", COMMAND_PAGES, ids=[str(page.relative_to(REPO)) for page in COMMAND_PAGES])
def test_every_command_in_the_docs_parses(page):
    """Each `mltrain ...` line of the page's bash blocks (and each command of the README's table)
    names a command and flags the command line accepts."""
    import typer

    from mltrain.cli import app

    group = typer.main.get_command(app)
    root = group.context_class(group, info_name="mltrain")
    lines = [line for language, _, text, _ in code_blocks(page) if language == "bash" for line in _command_lines(text)]
    if page.name == "README.md":
        lines += [re.sub(r"\\\|", "|", cell) for cell in re.findall(r"^\| `(mltrain [^`]+)` \|", page.read_text(), re.M)]
    for line in lines:
        words = shlex.split(line)[1:]
        if words[0].startswith("-"):
            continue  # mltrain --version, --install-completion
        command = group.get_command(root, words[0])
        assert command is not None, f"{page.relative_to(REPO)}: `{line}`: no command {words[0]}"
        arguments = [word for word in words[1:] if word != "..." and not word.endswith("...")]
        try:
            command.make_context(words[0], arguments, parent=root, resilient_parsing=False)
        except Exception as error:  # click's usage errors, whichever click typer carries
            if type(error).__name__ not in ("MissingParameter",):
                pytest.fail(f"{page.relative_to(REPO)}: `{line}`: {error}", pytrace=False)
