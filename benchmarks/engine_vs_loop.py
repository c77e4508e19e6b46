"""Training throughput of mltrain's engine against the shortest correct hand-written loop.

Both train the same model (same seed, same weights at start) on the same in-memory data with the
same optimizer, batch size and CPU threads. The engine's figure is summary.json's
train_samples_per_s (training steps only, as the hand loop); each side runs `--repeats` times
in turn and the best run counts. Prints samples/s and the ratio engine / hand loop.

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


def hand_loop(raw: dict) -> float:
    cfg = config_from_dict(raw)
    set_threads(cfg.train.threads)
    torch.manual_seed(cfg.seed)
    data = build_data(cfg.data, cfg.seed, torch.device("cpu"))
    model = build_model(cfg.model, data.spec, build_head(cfg.model.head, data.spec).num_outputs)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.optimizer.lr)
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
    print(f"{'model':6} {'engine samples/s':>17} {'hand loop samples/s':>20} {'ratio':>6}")
    with tempfile.TemporaryDirectory() as output:
        for name, model in MODELS.items():
            raw = config(model, args.epochs, output)
            engine_runs, hand_runs = [], []
            for _ in range(args.repeats):
                engine_runs.append(engine(raw))
                hand_runs.append(hand_loop(raw))
            best_engine, best_hand = max(engine_runs), max(hand_runs)
            print(f"{name:6} {best_engine:17,.0f} {best_hand:20,.0f} {best_engine / best_hand:6.2f}")


if __name__ == "__main__":
    main()
