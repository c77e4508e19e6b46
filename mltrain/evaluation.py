"""Score a checkpoint on a split in a fresh process: the checkpoint alone describes the run."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from .errors import UserError
from .metrics import confusion_matrix, per_class_scores
from .restore import Restored, restore
from .run_dir import RunDir, to_json, write_atomically

SPLITS = ("test", "val", "train")
MAX_REPORTED_CLASSES = 50  # more classes (e.g. a text's characters): no per-class table or confusion matrix


def evaluate_checkpoint(target: str | Path, split: str | None = None,
                        overrides: list[str] | tuple[str, ...] = ()) -> tuple[dict[str, Any], Path | None]:
    """Loss, accuracy, per-class precision/recall/F1 and the confusion matrix of one split
    (counted over every position for per-position targets; left out above MAX_REPORTED_CLASSES).
    The report is also written to <run>/eval-<split>.json when the checkpoint is in a run
    directory; returns the report and that file's path (None if not written)."""
    if split is not None and split not in SPLITS:
        raise UserError(f"--split {split!r}: choose from {', '.join(SPLITS)}")
    for item in overrides:
        if not item.startswith("data."):
            raise UserError(f"--set {item}: eval only takes data.* keys (the model and training are "
                            "fixed by the checkpoint)")
    # Scored on what this machine has, wherever it was trained.
    restored = restore(target, device="auto", overrides=overrides)
    run = restored.run_dir
    if run is None:
        return _report(restored, split), None
    with RunDir.reopen(run):  # before scoring: a run that another process writes is refused at once
        report = _report(restored, split)
        written = run / f"eval-{report['split']}.json"
        write_atomically(written, to_json(report, indent=2) + "\n")
        if "confusion_matrix" in report:
            _show_confusion(report, run, restored.cfg.output.loggers)
    return report, written


def _report(restored: Restored, split: str | None) -> dict[str, Any]:
    data, spec = restored.data(), restored.spec
    if split is None:  # the first the data has: test, else val (a text has no test split)
        split = next(name for name in SPLITS if name in data.splits)
    if split not in data.splits:
        raise UserError(f"--split {split}: dataset '{restored.cfg.data.dataset}' has no {split} split here "
                        f"(it has: {', '.join(data.splits)})")
    if split == "train" and data.streamed_train is not None:
        held = [name for name in SPLITS if name in data.splits and name != "train"]
        raise UserError(f"--split train: dataset '{restored.cfg.data.dataset}' streams its training split, which is "
                        f"never held whole; evaluate {' or '.join(held) or 'a held-out split'}")
    x, y = data.splits[split]
    metrics, predicted = restored.learner.evaluate_with_predictions(x, y, split)
    report: dict[str, Any] = {
        "checkpoint": str(restored.path), "split": split, "samples": len(y),
        "epoch": restored.checkpoint.get("epoch"), "step": restored.checkpoint.get("step"), "metrics": metrics,
    }
    if predicted is not None and spec.num_classes <= MAX_REPORTED_CLASSES:
        confusion = confusion_matrix(predicted, y, spec.num_classes)
        report["class_names"] = list(spec.class_names) or [str(i) for i in range(spec.num_classes)]  # token ids
        report["per_class"] = per_class_scores(confusion)
        report["confusion_matrix"] = confusion.tolist()
    return report


def _show_confusion(report: dict[str, Any], run: Path, loggers: tuple[str, ...]) -> None:
    """plots/confusion-<split>.png, and the same figure in the run's TensorBoard when it has one."""
    from .plots import confusion_figure, plot_confusion

    split, title = report["split"], f"{run.name}: {report['split']}, step {report['step']}"
    plot_confusion(report["confusion_matrix"], report["class_names"], run / "plots" / f"confusion-{split}.png", title)
    if "tensorboard" in loggers and importlib.util.find_spec("tensorboard") is not None:
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(str(run / "tensorboard")) as writer:
            writer.add_figure(f"confusion/{split}", confusion_figure(report["confusion_matrix"],
                                                                     report["class_names"], title),
                              global_step=report["step"])
