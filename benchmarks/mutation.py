"""Mutation check of the core modules: does some test fail when the code is changed a little?

Each mutant is one small change to one module (a comparison flipped, an operator swapped, a
number moved by one, a boolean or `and`/`or` inverted); the module's fast tests run against it
(in a copy of the package, so the working tree is never touched). A mutant is killed when a test
fails or the tests run past 3x their unmutated time; one that survives is a change no test notices.

A small AST mutator rather than mutmut: the tests run the console script in subprocesses, which
import the package from PYTHONPATH, and a plain copy with one file rewritten works for those too.
Not part of CI: the whole set takes tens of minutes on 2 cores.

    python benchmarks/mutation.py mltrain/losses.py [--every N] [--json out.json]
    python benchmarks/mutation.py all --every 8 --tree ../an-older-checkout   # its code and its tests
    python benchmarks/mutation.py all --recheck out.json   # only the survivors of an earlier run
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# module -> the fast tests that concern it (whole files; those a tree lacks are left out there)
SCOPES = {
    "mltrain/losses.py": ["tests/test_sequences.py", "tests/test_training_promises.py"],
    "mltrain/optim.py": ["tests/test_training_promises.py", "tests/test_train.py", "tests/test_config.py"],
    "mltrain/learner.py": ["tests/test_training_promises.py", "tests/test_train.py", "tests/test_engine.py"],
    "mltrain/checkpoint.py": ["tests/test_restore.py", "tests/test_resume.py", "tests/test_eval_and_checks.py"],
    "mltrain/train.py": ["tests/test_train.py", "tests/test_training_promises.py", "tests/test_resume.py",
                         "tests/test_engine.py", "tests/test_distributed.py"],
    "mltrain/state.py": ["tests/test_resume.py", "tests/test_restore.py", "tests/test_distributed.py"],
    "mltrain/data/splits.py": ["tests/test_data_and_metrics.py", "tests/test_data_sources.py"],
    "mltrain/data/stream.py": ["tests/test_data_and_metrics.py", "tests/test_resume.py", "tests/test_distributed.py"],
    "mltrain/strategy.py": ["tests/test_distributed.py", "tests/test_engine.py"],
}

COMPARE_SWAPS = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
                 ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}
BINOP_SWAPS = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Div,
               ast.Pow: ast.Mult, ast.Mod: ast.FloorDiv}


def _docstring_ids(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def mutations(tree: ast.AST) -> list[tuple[int, str, str]]:
    """(node index in ast.walk order, what changes, on which line) for every mutable spot."""
    skip = _docstring_ids(tree)
    found = []
    for index, node in enumerate(ast.walk(tree)):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Compare) and type(node.ops[0]) in COMPARE_SWAPS:
            found.append((index, f"{type(node.ops[0]).__name__} -> {COMPARE_SWAPS[type(node.ops[0])].__name__}", line))
        elif isinstance(node, ast.BinOp) and type(node.op) in BINOP_SWAPS:
            found.append((index, f"{type(node.op).__name__} -> {BINOP_SWAPS[type(node.op)].__name__}", line))
        elif isinstance(node, ast.BoolOp):
            found.append((index, f"{type(node.op).__name__} -> {'Or' if isinstance(node.op, ast.And) else 'And'}", line))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            found.append((index, "not x -> x", line))
        elif isinstance(node, ast.Constant) and id(node) not in skip:
            if isinstance(node.value, bool):
                found.append((index, f"{node.value} -> {not node.value}", line))
            elif isinstance(node.value, (int, float)):
                found.append((index, f"{node.value!r} -> {node.value + 1!r}", line))
    return found


def mutate(tree: ast.AST, index: int) -> str:
    """The module's source with the node at `index` (ast.walk order) changed."""
    tree = copy.deepcopy(tree)
    node = list(ast.walk(tree))[index]
    if isinstance(node, ast.Compare):
        node.ops[0] = COMPARE_SWAPS[type(node.ops[0])]()
    elif isinstance(node, ast.BinOp):
        node.op = BINOP_SWAPS[type(node.op)]()
    elif isinstance(node, ast.BoolOp):
        node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
    elif isinstance(node, ast.UnaryOp):
        node.op = ast.UAdd()  # +x: truthiness kept, the `not` gone
        node.operand = ast.Call(ast.Name("bool", ast.Load()), [node.operand], [])
    elif isinstance(node.value, bool):
        node.value = not node.value
    else:
        node.value = node.value + 1
    return ast.unparse(ast.fix_missing_locations(tree))


def run_tests(copy_root: Path, tests: list[str], timeout: float) -> tuple[bool, float]:
    """(passed, seconds) of the scoped tests in the copy."""
    env = {**os.environ, "PYTHONPATH": str(copy_root), "PYTHONDONTWRITEBYTECODE": "1"}
    started = time.monotonic()
    try:
        result = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                                cwd=copy_root, env=env, capture_output=True, timeout=timeout)
        passed = result.returncode == 0
    except subprocess.TimeoutExpired:
        passed = False
    return passed, time.monotonic() - started


def check_module(checkout: Path, module: str, every: int, only: list[dict] | None = None) -> dict:
    """Every `every`-th mutant of `module` in `checkout`, against that checkout's own tests; or
    `only` those (code and change, as a result's survivors list them)."""
    tests = [test for test in SCOPES[module] if (checkout / test).is_file()]
    if not tests:  # pytest without paths would run the whole suite for every mutant
        raise SystemExit(f"{module}: {checkout} has none of its tests ({', '.join(SCOPES[module])})")
    source = (checkout / module).read_text()
    tree = ast.parse(source)
    spots = mutations(tree)[::every]
    if only is not None:  # matched by the line's code, which edits above it do not move
        wanted = {(survivor["code"], survivor["change"]) for survivor in only}
        lines = source.splitlines()
        spots = [spot for spot in mutations(tree) if (lines[spot[2] - 1].strip(), spot[1]) in wanted]
    with tempfile.TemporaryDirectory(prefix="mltrain-mutation-") as tmp:
        root = Path(tmp)
        for name in ("mltrain", "tests", "configs"):
            shutil.copytree(checkout / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(checkout / "pyproject.toml", root / "pyproject.toml")
        passed, baseline = run_tests(root, tests, timeout=3600)
        if not passed:
            raise SystemExit(f"{module}: its tests fail without any mutant; fix them first")
        survivors = []
        for number, (index, change, line) in enumerate(spots, 1):
            (root / module).write_text(mutate(tree, index))
            killed = not run_tests(root, tests, timeout=3 * baseline + 10)[0]
            (root / module).write_text(source)
            print(f"[{number}/{len(spots)}] {module}:{line} {change}: {'killed' if killed else 'SURVIVED'}",
                  flush=True)
            if not killed:
                survivors.append({"line": line, "change": change, "code": source.splitlines()[line - 1].strip()})
    killed = len(spots) - len(survivors)
    return {"module": module, "tests": tests, "mutants": len(spots), "killed": killed,
            "score": round(killed / len(spots), 3) if spots else None, "tests_s": round(baseline, 1),
            "survivors": survivors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("module", help=f"one of {', '.join(SCOPES)}, or all")
    parser.add_argument("--every", type=int, default=1, help="every N-th mutant of each module (a spread sample)")
    parser.add_argument("--tree", type=Path, default=REPO, help="the checkout whose code and tests to check")
    parser.add_argument("--recheck", type=Path, help="a --json file of an earlier run: try only its survivors")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.every < 1:
        parser.error("--every takes 1 or more")
    modules = list(SCOPES) if args.module == "all" else [args.module]
    unknown = [m for m in modules if m not in SCOPES]
    if unknown:
        raise SystemExit(f"unknown module {unknown[0]}; one of {', '.join(SCOPES)}")
    earlier = {result["module"]: result["survivors"] for result in json.loads(args.recheck.read_text())} \
        if args.recheck else {}
    if args.recheck:
        modules = [module for module in modules if module in earlier]
    results = [check_module(args.tree.resolve(), module, args.every, earlier.get(module)) for module in modules]
    for result in results:
        print(f"{result['module']}: {result['killed']}/{result['mutants']} killed (score {result['score']}), "
              f"tests {result['tests_s']} s per run ({', '.join(result['tests'])})")
        for survivor in result["survivors"]:
            print(f"  survived line {survivor['line']}: {survivor['change']}   {survivor['code']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
