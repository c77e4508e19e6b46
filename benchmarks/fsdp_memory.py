"""What each of 2 processes holds of the weights, their gradients and the optimizer state under
train.strategy ddp and fsdp, for the shipped GPT configs and a GPT-2-sized one (12 layers of 768).

Each run trains a few steps with `--nproc 2` on the CPU (gloo, 1 thread per process) and reads
summary.json's `bytes_per_process` (rank 0's: its local shards under fsdp; gradients counted as
the trainable weights they mirror). The sizes are exact; no timing is involved.

    python benchmarks/fsdp_memory.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
MODELS = {
    "text_gpt": ("text_gpt.yaml", []),
    "text_gpt_bpe": ("text_gpt_bpe.yaml", []),
    "gpt 12x768": ("text_gpt.yaml", ["model.d_model=768", "model.heads=12", "model.layers=12", "data.block_size=64",
                                     "data.batch_size=2"]),
}
STEPS = 2


def held(config: str, overrides: list[str], strategy: str, run_dir: Path) -> dict[str, int]:
    sets = [item for key in [*overrides, f"train.strategy={strategy}", f"train.max_steps={STEPS}", "train.threads=1",
                             "train.preflight=false", "data.val_split=0.05"] for item in ("--set", key)]
    subprocess.run([sys.executable, "-m", "mltrain", "fit", str(CONFIGS / config), "--nproc", "2", "--quiet",
                    "--run-dir", str(run_dir), *sets], check=True, stdout=subprocess.DEVNULL)
    return json.loads((run_dir / "summary.json").read_text())["bytes_per_process"]


def mib(count: int) -> str:
    return f"{count / 2**20:,.2f}"


def main() -> None:
    print(f"2 CPU processes, {STEPS} steps; MiB held by each process (rank 0)")
    print(f"{'model':14} {'strategy':8} {'weights':>9} {'gradients':>10} {'optimizer':>10} {'total':>9}")
    with tempfile.TemporaryDirectory() as scratch:
        for name, (config, overrides) in MODELS.items():
            totals = {}
            for strategy in ("ddp", "fsdp"):
                figures = held(config, overrides, strategy, Path(scratch) / f"{name}-{strategy}".replace(" ", "-"))
                totals[strategy] = sum(figures.values())
                print(f"{name:14} {strategy:8} {mib(figures['parameters']):>9} {mib(figures['gradients']):>10} "
                      f"{mib(figures['optimizer']):>10} {mib(totals[strategy]):>9}")
            print(f"{'':14} fsdp/ddp {totals['fsdp'] / totals['ddp']:.2f}")


if __name__ == "__main__":
    main()
