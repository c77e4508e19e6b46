"""Every metric rule in one place: loss averaging, accuracy, perplexity, per-class scores, and the
regression errors (mse, mae, r2).

Sums stay on the device while a split is processed; `compute` is the one host sync.
"""

from __future__ import annotations

import math
from typing import Callable

import torch


def perplexity(mean_token_loss: float) -> float:
    """exp of the mean cross-entropy per token (nats): the effective number of equally likely
    next tokens. Reported wherever a classifier has a target per position."""
    return math.exp(mean_token_loss) if mean_token_loss < 700 else math.inf


# A classifier's batches wait at most this long to have their correct predictions counted; outputs
# as large as COUNTED_AT_ONCE elements are counted as they come (their step dwarfs a count), so the
# waiting ones hold at most 64 x 256 KB of float32 logits. Losses wait as long to be summed.
UNCOUNTED_BATCHES = 64
COUNTED_AT_ONCE = 1 << 16

REGRESSION_SUMS = ("squared_error", "absolute_error", "target", "target_square")  # per output, over samples


def regression_sums(predicted: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """One batch's sums of REGRESSION_SUMS, float64, each shaped like one sample's targets."""
    y = y.double()
    error = predicted.double().reshape(y.shape) - y
    return {"squared_error": error.square().sum(dim=0), "absolute_error": error.abs().sum(dim=0),
            "target": y.sum(dim=0), "target_square": y.square().sum(dim=0)}


def regression_metrics(sums: dict[str, torch.Tensor], samples: int, split: str) -> dict[str, float]:
    """In the target's units, averaged over the outputs: mse (squared units), mae; and r2 = 1 -
    SSE/SST of each output (1 for a perfect fit, 0 for predicting the mean), averaged as
    scikit-learn's r2_score does. An output whose targets are all equal has r2 1 when predicted
    exactly, else 0. `sums` are on the host."""
    samples = max(samples, 1)
    squared, absolute = sums["squared_error"].double(), sums["absolute_error"].double()
    spread = sums["target_square"].double() - sums["target"].double().square() / samples  # SST per output
    r2 = torch.where(spread > 0, 1 - squared / spread.clamp(min=1e-300), (squared == 0).double())
    return {f"{split}/mse": float(squared.mean()) / samples, f"{split}/mae": float(absolute.mean()) / samples,
            f"{split}/r2": float(r2.mean())}


class Accumulator:
    """Running sums over batches: target-weighted loss and, for classifiers, correct predictions;
    for regression (predictions in the target's units) the sums of `regression_metrics`.

    A target is one value of y: one per sample, or one per position (token) for per-position
    tasks, so loss and accuracy average over tokens there, as the loss itself does.
    """

    def __init__(self, device: torch.device, classifies: bool,
                 across: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 predict: Callable[[torch.Tensor], torch.Tensor] | None = None):
        """`across`: sums a tensor over every process of a distributed job (None for one process).
        `predict`: turns the outputs `update` is given (a head's logits) into predictions; without
        it `update` is given predictions."""
        self.classifies, self.across, self.predict = classifies, across, predict
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.errors: dict[str, torch.Tensor] = {}  # regression: REGRESSION_SUMS, from the first batch on
        self.count = 0  # samples, known on the host, no sync needed
        self.targets = 0  # values of y: samples x positions per sample
        self.per_position = False
        self._uncounted: list[tuple[torch.Tensor, torch.Tensor]] = []  # a classifier's (outputs, y) to count
        self._unsummed: list[torch.Tensor] = []  # the losses of the batches since loss_sum
        self._unsummed_targets: list[int] = []  # and their targets

    def update(self, loss: torch.Tensor, outputs: torch.Tensor | None, y: torch.Tensor) -> None:
        """Add one batch; `loss` is the mean over its targets. `loss` and `outputs` may still carry
        their (spent) autograd graph: they are read under no_grad. Losses are summed
        UNCOUNTED_BATCHES at a time, at fixed counts of batches and never early (a read adds the
        waiting ones without keeping that sum, and a checkpoint keeps them as they are): a float
        sum depends on how it is grouped, and an exact resume repeats the grouping. A classifier's
        small outputs wait likewise to have their correct predictions (an integer count) counted,
        so that a step of a small model adds no device op of its own."""
        targets = y.numel()
        self._unsummed.append(loss)
        self._unsummed_targets.append(targets)
        if len(self._unsummed) >= UNCOUNTED_BATCHES:
            self.loss_sum += self._unsummed_loss()
            self._unsummed.clear()
            self._unsummed_targets.clear()
        if outputs is not None and self.classifies:
            self._uncounted.append((outputs, y))
            if len(self._uncounted) >= UNCOUNTED_BATCHES or outputs.numel() >= COUNTED_AT_ONCE:
                self._count_correct()
        elif outputs is not None:
            with torch.no_grad():
                batch = regression_sums(self._predictions(outputs), y)
                self.errors = {key: self.errors[key] + value for key, value in batch.items()} if self.errors \
                    else batch
        self.count += y.shape[0]
        self.targets += targets
        self.per_position = y.dim() > 1

    def _predictions(self, outputs: torch.Tensor) -> torch.Tensor:
        return self.predict(outputs) if self.predict is not None else outputs

    def _loss_sum(self) -> torch.Tensor:
        """loss_sum with the waiting losses added, without keeping that sum (see `update`)."""
        return self.loss_sum + self._unsummed_loss() if self._unsummed else self.loss_sum

    @torch.no_grad()
    def _unsummed_loss(self) -> torch.Tensor:
        """The target-weighted sum of the waiting losses (some wait), float64."""
        weights = torch.tensor(self._unsummed_targets, dtype=torch.float64).to(self.loss_sum.device,
                                                                               non_blocking=True)
        return (torch.stack(self._unsummed).double() * weights).sum()

    def _count_correct(self) -> None:
        """Adds the waiting batches' correct predictions to `correct` (a few device ops, no sync)."""
        if not self._uncounted:
            return
        with torch.no_grad():
            for outputs, y in _joined(self._uncounted):
                self.correct += (self._predictions(outputs) == y).sum()
        self._uncounted.clear()

    def state_dict(self) -> dict:
        """The sums; the waiting losses as they are (`unsummed_losses`, with their targets)."""
        self._count_correct()
        with torch.no_grad():
            waiting = torch.stack(self._unsummed) if self._unsummed else torch.zeros(0, device=self.loss_sum.device)
        return {"loss_sum": self.loss_sum, "unsummed_losses": waiting,
                "unsummed_targets": list(self._unsummed_targets), "correct": self.correct,
                "count": self.count, "targets": self.targets, "per_position": self.per_position, **self.errors}

    def load_state_dict(self, state: dict) -> None:
        self._uncounted.clear()
        waiting, targets = state.get("unsummed_losses"), state.get("unsummed_targets", [])
        if waiting is not None:
            _check_waiting_losses(waiting, targets, state["targets"])
        self._unsummed = list(waiting.to(self.loss_sum.device).unbind()) if waiting is not None else []
        self._unsummed_targets = list(targets) if waiting is not None else []
        self.loss_sum.copy_(state["loss_sum"])
        self.correct.copy_(state["correct"])
        self.count, self.targets, self.per_position = state["count"], state["targets"], state["per_position"]
        self.errors = {key: state[key].to(self.loss_sum.device) for key in REGRESSION_SUMS if key in state}

    def compute(self, split: str, across_processes: bool = True) -> dict[str, float]:
        """The metrics so far: one host sync (and, across processes, one all-reduce)."""
        self._count_correct()
        sizes = [value.numel() for value in self.errors.values()]
        values = self._sums_on_host(across_processes)
        loss_sum, correct, targets, count = values[:4].tolist()
        metrics = {f"{split}/loss": loss_sum / max(targets, 1)}
        if self.classifies:
            metrics[f"{split}/accuracy"] = correct / max(targets, 1)
            if self.per_position:
                metrics[f"{split}/perplexity"] = perplexity(metrics[f"{split}/loss"])
        elif self.errors:
            sums = dict(zip(self.errors, values[4:].split(sizes)))
            metrics.update(regression_metrics(sums, int(count), split))
        return metrics

    def mean_loss(self, across_processes: bool = True) -> float:
        """`compute`'s loss alone, the predictions left waiting to be counted: one host sync."""
        if across_processes and self.across is not None:
            loss_sum, _, targets, _ = self._sums_on_host(across_processes)[:4].tolist()
            return loss_sum / max(targets, 1)
        return self._loss_sum().item() / max(self.targets, 1)

    def _sums_on_host(self, across_processes: bool) -> torch.Tensor:
        """loss_sum, correct (of the predictions counted so far), targets, count, then the regression
        sums: float64, on the host (the one host sync)."""
        counts = torch.tensor([float(self.targets), float(self.count)], dtype=torch.float64, device=self.loss_sum.device)
        values = torch.cat([self._loss_sum().view(1), self.correct.double().view(1), counts,
                            *(value.double().flatten() for value in self.errors.values())])
        if across_processes and self.across is not None:
            values = self.across(values)
        return values.cpu()

    def samples(self) -> int:
        """Samples counted over every process (an all-reduce under DDP)."""
        if self.across is None:
            return self.count
        return int(self.across(torch.tensor([self.count], device=self.loss_sum.device)).item())


def _joined(batches: list[tuple[torch.Tensor, torch.Tensor]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(outputs, y) batches concatenated: all of them at once when every batch's shapes past the
    first dimension agree, as a split's batches' do (torch.cat refuses those that don't), else
    in groups whose shapes do."""
    if len(batches) == 1:
        return batches
    outputs, ys = zip(*batches)
    try:
        return [(torch.cat(outputs), torch.cat(ys))]
    except RuntimeError:
        alike: dict[tuple, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        for batch_outputs, y in batches:
            alike.setdefault((batch_outputs.shape[1:], y.shape[1:]), []).append((batch_outputs, y))
        return [(torch.cat([o for o, _ in group]), torch.cat([y for _, y in group])) for group in alike.values()]


def _check_waiting_losses(waiting: object, targets: object, all_targets: object) -> None:
    """ValueError unless `waiting` is a checkpoint's waiting losses: fewer than UNCOUNTED_BATCHES
    floats, each with a count of targets, all of them among the epoch's."""
    if not isinstance(waiting, torch.Tensor) or waiting.dim() != 1 or not waiting.is_floating_point() \
            or len(waiting) >= UNCOUNTED_BATCHES:
        raise ValueError(f"unsummed_losses should be fewer than {UNCOUNTED_BATCHES} floats in a row")
    if not isinstance(targets, list) or len(targets) != len(waiting) \
            or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in targets) \
            or not isinstance(all_targets, int) or sum(targets) > all_targets:
        raise ValueError("unsummed_targets should hold a positive count of targets for each waiting loss, "
                         "within the epoch's")


def samples_per_s(samples: int, seconds: float) -> float:
    """Training throughput; 0 before any time has passed."""
    return samples / seconds if seconds > 0 else 0.0


def confusion_matrix(predictions: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(true class, predicted class) counts, over every position for per-position targets."""
    flat = (y.long() * num_classes + predictions.long()).flatten()
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_scores(confusion: torch.Tensor) -> dict[str, list[float]]:
    """Precision, recall and F1 of each class (0 where undefined), and its support."""
    confusion = confusion.double()
    true_positive = confusion.diag()
    predicted = confusion.sum(dim=0)
    actual = confusion.sum(dim=1)
    precision = torch.where(predicted > 0, true_positive / predicted.clamp(min=1), 0.0)
    recall = torch.where(actual > 0, true_positive / actual.clamp(min=1), 0.0)
    denominator = precision + recall
    f1 = torch.where(denominator > 0, 2 * precision * recall / denominator.clamp(min=1e-12), 0.0)
    return {"precision": precision.tolist(), "recall": recall.tolist(), "f1": f1.tolist(),
            "support": actual.long().tolist()}


UNCHECKED_LOSSES = 1024  # losses the NaN guard holds before it reads them (a host sync on a GPU)


class LossGuard:
    """Finds the first optimizer step whose loss was NaN or inf without a host sync per step: each
    micro-batch's (step, loss) waits until a read (`first_non_finite_step`) or until
    UNCHECKED_LOSSES wait, then all are checked at once: two device ops and one host sync. Losses
    known to be finite (`known_finite`) are dropped unchecked. A loss may still hold its spent
    autograd graph: every UNCOUNTED_BATCHES of them are stacked (one op, under no_grad), so that no
    more graphs than that are kept."""

    def __init__(self) -> None:
        self._steps: list[int] = []
        self._losses: list[torch.Tensor] = []  # the latest, as they came
        self._stacked: list[torch.Tensor] = []  # the earlier, UNCOUNTED_BATCHES to a tensor
        self._first_bad_step: int | None = None

    def add(self, step: int, loss: torch.Tensor) -> None:
        self._steps.append(step)
        self._losses.append(loss)
        if len(self._losses) >= UNCOUNTED_BATCHES:
            with torch.no_grad():
                self._stacked.append(torch.stack(self._losses))
            self._losses.clear()
            if len(self._steps) >= UNCHECKED_LOSSES:
                self._check()

    def first_non_finite_step(self) -> int | None:
        self._check()
        return self._first_bad_step

    def known_finite(self) -> None:
        """The waiting losses are known to be finite (a finite sum of them all, say): dropped unread."""
        self._steps.clear()
        self._losses.clear()
        self._stacked.clear()

    def _check(self) -> None:
        if not self._steps:
            return
        with torch.no_grad():
            losses = torch.cat([*self._stacked, *([torch.stack(self._losses)] if self._losses else [])])
        finite = torch.isfinite(losses).tolist()
        if self._first_bad_step is None and not all(finite):
            self._first_bad_step = self._steps[finite.index(False)]
        self.known_finite()
