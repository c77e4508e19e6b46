"""Loss and metric curves as PNGs, drawn with matplotlib's file-only backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_metrics(records: list[dict[str, Any]], directory: Path) -> list[Path]:
    """One figure per metric (loss, accuracy, ...), every split on it, by epoch; plus the lr."""
    plt = _pyplot()
    if not records:
        return []
    epochs = [record["epoch"] for record in records]
    names = sorted({key.split("/", 1)[1] for record in records for key in record if "/" in key})
    written = []
    for name in names + ["lr"]:
        figure, axes = plt.subplots(figsize=(6, 4), dpi=100)
        keys = ["lr"] if name == "lr" else [k for k in ("train/" + name, "val/" + name) if k in records[0]]
        for key in keys:
            axes.plot(epochs, [record.get(key) for record in records], marker="o", markersize=3, label=key)
        axes.set_xlabel("epoch")
        axes.set_ylabel(name)
        if name == "loss":
            axes.set_yscale("log")
        axes.grid(alpha=0.3)
        axes.legend()
        figure.tight_layout()
        path = directory / f"{name}.png"
        figure.savefig(path)
        plt.close(figure)
        written.append(path)
    return written


def plot_lr_curve(report: dict[str, Any], path: Path) -> Path:
    """lr-find's smoothed loss against the lr (log scale), the suggestion marked."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6, 4), dpi=100)
    axes.plot(report["lrs"], report["losses"])
    if report["suggested_lr"]:
        axes.axvline(report["suggested_lr"], color="tab:red", linestyle="--",
                     label=f"suggested lr {report['suggested_lr']:.2e}")
        axes.legend()
    axes.set_xscale("log")
    axes.set_xlabel("learning rate")
    axes.set_ylabel("training loss (smoothed)")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
