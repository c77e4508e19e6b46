"""Everything to check on a GPU machine, in one command and one report (`--minutes`, 8 by default, on
one GPU: the test suite gets whatever time the checks before it leave):

1. a smoke matrix: every shipped config for a few steps in bf16, three of them also in fp32,
   fp16 and compiled, and each export format of one run;
2. exact resume on CUDA: a deterministic run killed with kill -9 mid-run and resumed, against one
   never stopped (weights and metrics.jsonl compared bitwise);
3. the speed table (`benchmarks/speed.py --device cuda --precision bf16 --channels-last`), eager
   and with mltrain compiled (`--compile reduce-overhead`: CUDA graphs);
4. start-up on CUDA: the quickstart's `fit` as a whole process against importing torch with CUDA
   initialised and building one optimizer, and where one such process spends its time (the
   functions that take longest, from cProfile);
5. the test suite on the GPU (`MLTRAIN_TEST_DEVICE=cuda pytest`), within what time is left.

Configs that need data this machine lacks (a downloaded set, your images) are reported as
skipped with the reason. The report goes to --report (markdown) and beside it as JSON.

    python benchmarks/gpu_check.py --report gpu-report.md
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MLTRAIN = str(Path(sys.executable).with_name("mltrain"))
PRECISION_CONFIGS = ("quickstart", "mnist_cnn", "text_gpt")  # also run in fp32, fp16 and compiled
SHORT = ["train.max_steps=20", "train.epochs=1", "train.preflight=false", "scheduler.warmup_steps=0"]


def run(args: list[str], timeout: float, env: dict | None = None) -> tuple[int, str, float]:
    started = time.perf_counter()
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=REPO,
                              env={**os.environ, **(env or {})})
        return done.returncode, (done.stdout + done.stderr)[-2000:], time.perf_counter() - started
    except subprocess.TimeoutExpired:
        return 124, f"timed out after {timeout:.0f} s", time.perf_counter() - started


def smoke_matrix(scratch: Path) -> list[dict]:
    """Every shipped config in bf16; three of them also in fp32, fp16 and bf16 compiled; then each
    export format of the quickstart's run."""
    variants = [(config, "bf16", False) for config in sorted((REPO / "configs").glob("*.yaml"))]
    variants += [(REPO / "configs" / f"{name}.yaml", precision, compiled) for name in PRECISION_CONFIGS
                 for precision, compiled in (("fp32", False), ("fp16", False), ("bf16", True))]
    rows = []
    for config, precision, compiled in variants:
        name = f"{config.stem}-{precision}" + ("-compiled" if compiled else "")
        overrides = [*SHORT, f"train.precision={precision}", f"train.compile={str(compiled).lower()}"]
        rows.append(_row(f"fit {name}", [MLTRAIN, "fit", str(config), "--run-dir", str(scratch / name), "--quiet",
                                         *(item for value in overrides for item in ("--set", value))]))
    rows += [_row(f"export {fmt}", [MLTRAIN, "export", str(scratch / "quickstart-bf16"), "--format", fmt])
             for fmt in ("onnx", "pt2", "safetensors")]
    return rows


def _row(check: str, args: list[str]) -> dict:
    code, output, seconds = run(args, 300)
    return {"check": check, "status": _status(code, output), "seconds": round(seconds, 1),
            "detail": "" if code == 0 else output.strip().splitlines()[-1][:200]}


def _status(code: int, output: str) -> str:
    if code == 0:
        return "pass"
    if code == 2 and ("download" in output or "no such" in output or "not installed" in output):
        return "skip"
    return "FAIL"


def exact_resume(scratch: Path) -> dict:
    """A deterministic digits run killed at step 30 of 90 and resumed, against one never stopped."""
    import torch

    overrides = ["train.deterministic=true", "train.epochs=3", "train.checkpoint_every_steps=7",
                 "train.log_every_steps=1", "train.preflight=false"]
    sets = [item for value in overrides for item in ("--set", value)]
    config = str(REPO / "configs" / "digits_cnn.yaml")
    whole, killed = scratch / "resume-whole", scratch / "resume-killed"
    run([MLTRAIN, "fit", config, "--run-dir", str(whole), "--quiet", *sets], 300)
    process = subprocess.Popen([MLTRAIN, "fit", config, "--run-dir", str(killed), "--quiet", *sets], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        lines = (killed / "metrics.jsonl").read_text().splitlines() if (killed / "metrics.jsonl").exists() else []
        if lines and json.loads(lines[-1]).get("step", 0) >= 30:
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    code, output, _ = run([MLTRAIN, "fit", "--resume", str(killed), "--quiet"], 300)
    if code != 0:
        return {"check": "kill -9 and resume, deterministic", "status": "FAIL", "detail": output[-200:]}
    a, b = (torch.load(path / "checkpoints" / "last.pt", weights_only=True)["model"] for path in (whole, killed))
    same = all(torch.equal(a[key], b[key]) for key in a) and \
        (whole / "metrics.jsonl").read_text() == (killed / "metrics.jsonl").read_text()
    return {"check": "kill -9 and resume, deterministic", "status": "pass" if same else "FAIL",
            "detail": "bitwise equal" if same else "weights or metrics differ"}


CUDA_FLOOR = ("import torch; torch.zeros(1, device='cuda'); "
              "torch.optim.SGD([torch.zeros(1, device='cuda', requires_grad=True)], lr=0.1)")
STARTUP_COMMANDS = {
    "python: import torch, CUDA initialised": [sys.executable, "-c", "import torch; torch.zeros(1, device='cuda')"],
    "python: the same and one torch.optim.SGD (the floor)": [sys.executable, "-c", CUDA_FLOOR],
    "python: the floor collecting no garbage": [sys.executable, "-c", "import gc; gc.disable(); " + CUDA_FLOOR],
    "mltrain fit configs/quickstart.yaml --device cuda --quiet": [
        MLTRAIN, "fit", str(REPO / "configs" / "quickstart.yaml"), "--device", "cuda", "--quiet"],
}


def startup_on_cuda(scratch: Path, repeats: int = 3) -> dict:
    """Whole processes on CUDA, the median of `repeats` after an untimed round; the fit's own
    training (summary.json's duration_s); and a profile of one more fit."""
    seconds: dict[str, float] = {}
    trained: list[float] = []
    for label, command in STARTUP_COMMANDS.items():
        times = []
        for repeat in range(-1, repeats):  # round -1 warms the disk and the caches, untimed
            run_dir = scratch / f"startup-{repeat}"
            code, output, took = run(command + (["--run-dir", str(run_dir)] if command[0] == MLTRAIN else []), 120)
            if code != 0:
                return {"error": f"{label}: {output.strip().splitlines()[-1][:200] if output.strip() else code}"}
            if repeat >= 0:
                times.append(took)
                if command[0] == MLTRAIN:
                    trained.append(json.loads((run_dir / "summary.json").read_text())["duration_s"])
        seconds[label] = statistics.median(times)
    seconds["of which the fit's training (summary.json duration_s)"] = statistics.median(trained)
    profile = scratch / "fit.prof"
    code, output, _ = run([sys.executable, "-m", "cProfile", "-o", str(profile), MLTRAIN,
                           *STARTUP_COMMANDS["mltrain fit configs/quickstart.yaml --device cuda --quiet"][1:],
                           "--run-dir", str(scratch / "startup-profiled")], 180)
    return {"seconds": seconds, "profile": _slowest(profile) if code == 0 and profile.exists()
            else f"the profiled fit failed (exit {code}): {output.strip()[-300:]}"}


def _slowest(profile: Path) -> str:
    """mltrain's functions by cumulative time (its phases: preparing, building, training,
    finishing), then every function by its own time (cProfile's overhead included)."""
    import io
    import pstats

    text = io.StringIO()
    stats = pstats.Stats(str(profile), stream=text)
    stats.sort_stats("cumulative").print_stats(str(REPO / "mltrain"), 30)
    stats.sort_stats("tottime").print_stats(15)
    return text.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, default=Path("gpu-report.md"))
    parser.add_argument("--minutes", type=float, default=8.0, help="the whole check's budget")
    args = parser.parse_args()
    started = time.monotonic()
    report: dict = {"device": _device(), "checks": []}
    with tempfile.TemporaryDirectory() as scratch:
        report["checks"] += smoke_matrix(Path(scratch))
        report["checks"].append(exact_resume(Path(scratch)))
        report["startup"] = startup_on_cuda(Path(scratch))
    code, output, seconds = run([sys.executable, "benchmarks/speed.py", "--only", "steps", "--device", "cuda",
                                 "--precision", "bf16", "--channels-last", "--epochs", "2", "--repeats", "3"], 240)
    report["speed"] = {"returncode": code, "seconds": round(seconds, 1), "output": output}
    code, output, seconds = run([sys.executable, "benchmarks/speed.py", "--only", "steps", "--device", "cuda",
                                 "--precision", "bf16", "--channels-last", "--epochs", "2", "--repeats", "3",
                                 "--compile", "reduce-overhead"], 300)
    report["speed_graphs"] = {"returncode": code, "seconds": round(seconds, 1), "output": output}
    left = args.minutes * 60 - (time.monotonic() - started)
    code, output, seconds = run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "tests"],
                                max(left, 60), env={"MLTRAIN_TEST_DEVICE": "cuda"})
    report["suite"] = {"returncode": code, "seconds": round(seconds, 1), "output": output}
    args.report.with_suffix(".json").write_text(json.dumps(report, indent=2))
    args.report.write_text(_markdown(report))
    print(_markdown(report))


def _device() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA GPU (the checks ran on the CPU)"


def _markdown(report: dict) -> str:
    lines = [f"# GPU check: {report['device']}", "", "| check | status | seconds | detail |", "| --- | --- | --- | --- |"]
    lines += [f"| {row['check']} | {row['status']} | {row.get('seconds', '')} | {row.get('detail', '')} |"
              for row in report["checks"]]
    lines += ["", "## Speed (bf16, channels_last)", "", "```", report["speed"]["output"].strip(), "```", "",
              "## Speed with train.compile: reduce-overhead (CUDA graphs)", "", "```",
              report["speed_graphs"]["output"].strip(), "```", "",
              *_startup_lines(report["startup"]),
              f"## Test suite on the GPU (exit {report['suite']['returncode']}, {report['suite']['seconds']} s)",
              "", "```", report["suite"]["output"].strip()[-1500:], "```", ""]
    return "\n".join(lines)


def _startup_lines(startup: dict) -> list[str]:
    lines = ["## Start-up on CUDA (whole processes, seconds)", ""]
    if "error" in startup:
        return [*lines, startup["error"], ""]
    seconds = startup["seconds"]
    lines += ["| command | seconds |", "| --- | --- |"]
    lines += [f"| {label} | {value:.2f} |" for label, value in seconds.items()]
    fit, trained = seconds["mltrain fit configs/quickstart.yaml --device cuda --quiet"], \
        seconds["of which the fit's training (summary.json duration_s)"]
    lines += ["", f"mltrain's own (the fit less its training and the floor): "
              f"{fit - trained - seconds['python: the same and one torch.optim.SGD (the floor)']:.2f} s; "
              f"against the floor collecting no garbage: "
              f"{fit - trained - seconds['python: the floor collecting no garbage']:.2f} s"]
    return [*lines, "", "Where one more fit spends its time (cProfile: mltrain's functions by cumulative time, "
            "then every function by its own):", "", "```", startup["profile"].strip()[:9000], "```", ""]


if __name__ == "__main__":
    main()
