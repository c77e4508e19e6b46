"""Training throughput of mltrain's engine against the shortest correct hand-written loop.

Both train the same model (same seed, same weights at start) on the same in-memory data with the
same optimizer, batch size and CPU threads. The engine's figure is summary.json's
train_samples_per_s (training steps only, as the hand loop); each side runs `--repeats` times
in turn and the best run counts. The hand loop runs twice: with torch's default Adam, as the
shortest loop would, and with the fused Adam kernel the engine picks. Prints samples/s and the
ratios engine / hand loop.

    python benchmarks/engine_vs_loop.py [--epochs 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
import torch.nn.functional as F

import mltrain
from mltrain.config import config_from_dict
from mltrain.data import build_data
from mltrain.devices import set_threads
from mltrain.heads import build_head
from mltrain.models import build_model

MODELS = {
    "mlp": {"arch": "mlp", "hidden": [256, 128]},
    "cnn": {"arch": "cnn", "channels": [32, 64], "norm": "batch"},
}


def config(model: dict, epochs: int, output: str) -> dict:
    return {"name": "bench", "seed": 0, "data": {"dataset": "digits", "batch_size": 64, "val_split": 0.0},
            "model": model, "optimizer": {"name": "adam", "lr": 1e-3},
            "train": {"epochs": epochs, "log_every_steps": 1000}, "output": {"dir": output}}


def engine(raw: dict) -> float:
    return mltrain.fit(raw, quiet=True).summary["train_samples_per_s"]


def hand_loop(raw: dict, fused: bool) -> float:
    cfg = config_from_dict(raw)
    set_threads(cfg.train.threads)
    torch.manual_seed(cfg.seed)
    data = build_data(cfg.data, cfg.seed, torch.device("cpu"))
    model = build_model(cfg.model, data.spec, build_head(cfg.model.head, data.spec).num_outputs)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.optimizer.lr, fused=fused or None)
    x, y = data.splits["train"]
    batch = cfg.data.batch_size
    model.train()
    started = time.perf_counter()
    for _ in range(cfg.train.epochs):
        order = torch.randperm(len(y))
        for start in range(0, len(y), batch):
            index = order[start:start + batch]
            loss = F.cross_entropy(model(x[index]), y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return cfg.train.epochs * len(y) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, digits (1,293 training samples), batch 64, {args.epochs} epochs, "
          f"best of {args.repeats}")
    print("samples/s (ratio engine / hand loop)")
    print(f"{'model':6} {'engine':>9} {'hand loop, default Adam':>30} {'hand loop, fused Adam':>30}")
    with tempfile.TemporaryDirectory() as output:
        for name, model in MODELS.items():
            raw = config(model, args.epochs, output)
            runs: dict[str, list[float]] = {"engine": [], "default": [], "fused": []}
            for _ in range(args.repeats):
                runs["engine"].append(engine(raw))
                runs["default"].append(hand_loop(raw, fused=False))
                runs["fused"].append(hand_loop(raw, fused=True))
            best = {side: max(figures) for side, figures in runs.items()}
            columns = [f"{best[side]:,.0f} ({best['engine'] / best[side]:.2f})" for side in ("default", "fused")]
            print(f"{name:6} {best['engine']:9,.0f} {columns[0]:>30} {columns[1]:>30}")


if __name__ == "__main__":
    main()
