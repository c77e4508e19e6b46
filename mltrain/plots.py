"""Loss and metric curves as PNGs, drawn on matplotlib figures of their own (no pyplot: its
import and global figure list cost a fifth of a second and hold figures until closed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .run_dir import read_epoch_rows, read_records


def _figure(**size: Any) -> tuple[Any, Any]:
    """A figure of `size` (figsize, dpi) with one set of axes; saved as PNG by its Agg canvas."""
    from matplotlib.figure import Figure

    figure = Figure(**size)
    return figure, figure.subplots()


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def plot_run(run: Path, best: dict[str, Any] | None = None) -> list[Path]:
    """The plots of a run directory, into <run>/plots/, from its metrics files and `best` (by
    default, summary.json's)."""
    epochs = read_epoch_rows(run / "metrics.csv") if (run / "metrics.csv").is_file() else []
    logged = read_records(run / "metrics.jsonl") if (run / "metrics.jsonl").is_file() else []
    if best is None:
        try:
            best = json.loads((run / "summary.json").read_text(encoding="utf-8")).get("best")
        except (OSError, ValueError, AttributeError):
            best = None
    return plot_metrics(epochs, run / "plots", logged=logged, best=best, title=run.name)


def plot_metrics(records: list[dict[str, Any]], directory: Path, logged: list[dict[str, Any]] | None = None,
                 best: dict[str, Any] | None = None, title: str = "") -> list[Path]:
    """One figure per metric (loss, accuracy, ...) by epoch, every split on it, the best epoch marked;
    and lr.png, the lr (of every parameter group) at every logged step. `records`: one per epoch;
    `logged`: every record of metrics.jsonl (default: `records`); `best`: summary.json's {metric,
    value, epoch}."""
    if not records:
        return []
    from matplotlib.ticker import MaxNLocator


    best_epoch = (best or {}).get("epoch") or None
    names = sorted({key.split("/", 1)[1] for record in records for key in record
                    if key.split("/", 1)[0] in ("train", "val")})
    written = []
    for name in names:
        figure, axes = _figure(figsize=(6, 4), dpi=100)
        for split in ("train", "val"):
            points = [(record["epoch"], record[f"{split}/{name}"]) for record in records
                      if record.get(f"{split}/{name}") is not None]
            if points:
                axes.plot(*zip(*points), marker="o", markersize=3, label=f"{split}/{name}")
        if best_epoch:
            axes.axvline(best_epoch, color="grey", linestyle=":", linewidth=1)
            if str(best.get("metric")).partition("/")[2] == name and best.get("value") is not None:
                axes.plot([best_epoch], [best["value"]], marker="*", markersize=14, color="tab:red",
                          linestyle="none", label=f"best {best['metric']} {best['value']:.4g} (epoch {best_epoch})")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_xlabel("epoch")
        axes.set_ylabel(name)
        axes.set_title(f"{name} by epoch" + (f" ({title})" if title else ""))
        if name == "loss":
            axes.set_yscale("log")
        axes.grid(alpha=0.3)
        axes.legend()
        written.append(_save(figure, directory / f"{name}.png"))
    rates = sorted({key for record in (logged or records) for key in record if key == "lr" or key.startswith("lr/")})
    if rates:
        figure, axes = _figure(figsize=(6, 4), dpi=100)
        for key in rates:  # lr, then each of optimizer.groups' lr/<params>
            steps = {record["step"]: record[key] for record in (logged or records) if record.get(key) is not None}
            axes.plot(list(steps), list(steps.values()), marker=".", markersize=3, label=key)
        if len(rates) > 1:
            axes.legend()
        axes.set_xlabel("step")
        axes.set_ylabel("lr")
        axes.set_title("learning rate by step" + (f" ({title})" if title else ""))
        axes.grid(alpha=0.3)
        written.append(_save(figure, directory / "lr.png"))
    return written


def plot_comparison(curves: dict[str, list[tuple[int, float]]], metric: str, path: Path) -> Path:
    """Several runs' (step, value) curves of one metric on one figure, a run per line."""
    figure, axes = _figure(figsize=(7, 4.5), dpi=100)
    for run, points in curves.items():
        axes.plot(*zip(*points), marker="o" if len(points) <= 50 else None, markersize=3, label=run)
    axes.set_xlabel("step")
    axes.set_ylabel(metric)
    axes.set_title(f"{metric} by step")
    if metric.endswith("loss") and all(value > 0 for points in curves.values() for _, value in points):
        axes.set_yscale("log")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    return _save(figure, path)


def plot_lr_curve(report: dict[str, Any], path: Path) -> Path:
    """lr-find's smoothed loss against the lr (log scale), the suggestion marked."""
    figure, axes = _figure(figsize=(6, 4), dpi=100)
    axes.plot(report["lrs"], report["losses"])
    if report["suggested_lr"]:
        axes.axvline(report["suggested_lr"], color="tab:red", linestyle="--",
                     label=f"suggested lr {report['suggested_lr']:.2e}")
        axes.legend()
    axes.set_xscale("log")
    axes.set_xlabel("learning rate")
    axes.set_ylabel("training loss (smoothed)")
    axes.grid(alpha=0.3)
    return _save(figure, path)


def confusion_figure(matrix: list[list[int]], class_names: list[str], title: str) -> Any:
    """A confusion matrix as a matplotlib figure: rows true classes, columns predicted, counts shown."""
    size = max(4.0, 0.45 * len(class_names) + 2)
    figure, axes = _figure(figsize=(size, size))
    axes.imshow(matrix, cmap="Blues")
    axes.set(xticks=range(len(class_names)), yticks=range(len(class_names)), xlabel="predicted", ylabel="true",
             title=title)
    axes.set_xticklabels(class_names, rotation=90)
    axes.set_yticklabels(class_names)
    highest = max(max(row) for row in matrix) or 1
    for row, counts in enumerate(matrix):
        for column, count in enumerate(counts):
            axes.text(column, row, str(count), ha="center", va="center", fontsize=7,
                      color="white" if count > highest / 2 else "black")
    return figure


def plot_confusion(matrix: list[list[int]], class_names: list[str], path: Path, title: str) -> Path:
    figure = confusion_figure(matrix, class_names, title)
    return _save(figure, path)


def plot_image_batch(images: Any, labels: list[str], path: Path, columns: int = 8) -> Path:
    """A grid of (B, C, H, W) images as the model receives them (C of 1 or 3), one colour scale for
    the whole batch so that the normalisation shows; each labelled below."""
    import numpy as np

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
    figure, axes = _figure(figsize=(columns * 1.0, rows * 1.25), dpi=100)
    axes.imshow(mosaic[..., 0] if channels == 1 else mosaic, cmap="gray", vmin=0.0, vmax=1.0,
                interpolation="nearest")
    for index, label in enumerate(labels):
        axes.text((index % columns) * across + width / 2, (index // columns) * down + height,
                  label, ha="center", va="top", fontsize=7, color="tab:red")
    axes.axis("off")
    axes.set_title(f"first training batch as the model gets it (values {low:.3g} .. {high:.3g})", fontsize=8)
    return _save(figure, path)
