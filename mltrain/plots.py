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


def plot_image_batch(images: Any, labels: list[str], path: Path, columns: int = 8) -> Path:
    """A grid of (B, C, H, W) images as the model receives them (C of 1 or 3), one colour scale for
    the whole batch so that the normalisation shows; each labelled below."""
    import numpy as np

    plt = _pyplot()
    images = images.detach().float().cpu()
    low, high = float(images.min()), float(images.max())
    scaled = ((images - low) / max(high - low, 1e-12)).permute(0, 2, 3, 1).numpy()  # (B, H, W, C) in [0, 1]
    count, height, width, channels = scaled.shape
    rows = -(-count // columns)
    across, down = width + max(1, width // 8), height + max(2, height // 3)  # pixels per image with gaps
    mosaic = np.ones((rows * down, columns * across, channels), dtype=np.float32)
    for index, image in enumerate(scaled):
        top, left = (index // columns) * down, (index % columns) * across
        mosaic[top:top + height, left:left + width] = image
    figure, axes = plt.subplots(figsize=(columns * 1.0, rows * 1.25), dpi=100)
    axes.imshow(mosaic[..., 0] if channels == 1 else mosaic, cmap="gray", vmin=0.0, vmax=1.0,
                interpolation="nearest")
    for index, label in enumerate(labels):
        axes.text((index % columns) * across + width / 2, (index // columns) * down + height,
                  label, ha="center", va="top", fontsize=7, color="tab:red")
    axes.axis("off")
    axes.set_title(f"first training batch as the model gets it (values {low:.3g} .. {high:.3g})", fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
