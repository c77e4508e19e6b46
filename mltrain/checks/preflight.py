"""The pre-training checklist of "A Recipe for Training Neural Networks", as one command.

Each check is one function returning a CheckResult: the data (data_checks.py), the loss at
init, the dumb baselines, an input-independent baseline, gradient flow, batch independence,
memorising a tiny subset, the learning rate against a short range test, the schedule against the
run's length, and a look at the first batch as the model gets it. `run_cheap_checks` is the
subset that costs no training, for the start of every fit.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..build import build_learner
from ..config import Config
from ..data import DataSplits
from ..data.dataset import batches, global_batches
from ..data.stream import drops_last
from ..data.orders import epoch_order
from ..devices import pick_device
from ..errors import UserError
from ..learner import EVAL_BATCH_SIZE, Learner, compile_mode
from ..metrics import Accumulator
from ..optim import run_length
from ..run_dir import to_json, write_atomically
from ..startup import prepare, seed_everything
from .data_checks import data_checks
from .lr_find import range_test
from .probes import (
    TINY_SAMPLES, TINY_STEPS, Memorisation, gradient_flow, loss_at_init, memorise, without_regularisation,
)
from .result import CheckResult, passed

INIT_SAMPLES = 1024  # training samples the loss at init is measured on
INPUT_MARGIN = 0.1  # real inputs must end with a loss at least this fraction below zeroed inputs'
MIXING_SAMPLES = 4  # samples whose outputs are checked against each other's inputs
MIXING_TOLERANCE = 1e-6  # a gradient across samples above this fraction of a sample's own counts as mixing
LR_STEPS = 100  # optimizer steps of the range test
LR_ABOVE, LR_BELOW = 10.0, 100.0  # warn when the lr is this many times above / below the suggestion
SCALE_LIMIT = 100.0  # inputs larger than this in magnitude are not standardised
SHOWN_FEATURES = 16  # features listed one per row in the batch summary
SHOWN_TEXTS = 4  # token windows decoded in the batch summary
BATCH_PLOT = "plots/preflight-batch.png"
LR_PLOT = "plots/preflight-lr.png"


def default_output_dir(cfg: Config) -> Path:
    """Where preflight writes its plots and report: beside the runs, like lr-find's plot."""
    return Path(cfg.output.dir) / f"{cfg.name}-preflight"


def fresh_learner(cfg: Config, data: DataSplits, device: torch.device, start: Learner) -> Learner:
    """A learner with the run's initial weights, the same each time it is built: its seeded draw,
    and the starting weights `start` read (copied from it, unless `cfg` builds another structure,
    such as an MLP without its dropout layers)."""
    seed_everything(cfg.seed)
    learner = build_learner(cfg, data.spec, device, backbone=start.backbone)
    if start.backbone:
        state = start.model.state_dict()
        if state.keys() == learner.model.state_dict().keys():
            learner.model.load_state_dict(state)
        else:
            seed_everything(cfg.seed)
            learner = build_learner(cfg, data.spec, device)
    return learner


def without_augmentation(data: DataSplits) -> DataSplits:
    """The same splits with the training samples as stored: checks that must not draw random numbers."""
    x, y = data.splits["train"]
    x = x.with_augment(None) if hasattr(x, "with_augment") else x
    return DataSplits(data.spec, {**data.splits, "train": (x, y)}, data.state)


def _scoring_split(data: DataSplits) -> str:
    """The split a baseline is scored on: val, never test (choose by validation)."""
    return "val" if "val" in data.splits else "train"


# --- the checks ------------------------------------------------------------------------------

def init_loss(learner: Learner, data: DataSplits) -> CheckResult:
    """The untrained model's loss on the first training samples against its expected value."""
    x, y = without_augmentation(data).subset("train", INIT_SAMPLES).splits["train"]
    return loss_at_init(learner, x, y)


def dumb_baselines(learner: Learner, data: DataSplits) -> CheckResult:
    """What a model that ignores its input scores on val: the training targets' prior (the majority
    class's accuracy and the class frequencies' loss), or the mean target's MSE."""
    criterion, split = learner.criterion, _scoring_split(data)
    y = data.splits[split][1]
    y_train = data.splits["train"][1]
    prior = criterion.prior_logits(y_train).to(y.device)
    totals = Accumulator(y.device, criterion.classifies)
    for yb in y.split(EVAL_BATCH_SIZE):
        logits = prior.expand(len(yb), -1)
        totals.update(criterion.loss(logits, yb), criterion.predict(logits) if criterion.classifies else None, yb)
    scores = totals.compute(split)
    values = {"split": split, **scores}
    if criterion.classifies:
        counts = torch.bincount(y_train.flatten().cpu(), minlength=data.spec.num_classes)
        names = data.spec.class_names or tuple(map(str, range(data.spec.num_classes)))
        majority = names[int(counts.argmax())]
        detail = (f"majority class '{majority}': {scores[f'{split}/accuracy']:.1%} {split} accuracy; class "
                  f"frequencies: {split} loss {scores[f'{split}/loss']:.4g}. Training must beat both")
    else:
        detail = f"predicting the mean target: {split} MSE {scores[f'{split}/loss']:.4g}. Training must beat it"
    return CheckResult("dumb baselines", "pass", detail, values=values)


def input_independent_baseline(cfg: Config, data: DataSplits, device: torch.device, x: torch.Tensor,
                               y: torch.Tensor, real: Memorisation, start: Learner) -> CheckResult:
    """The same steps as the tiny run, on zeroed inputs: they must end worse than the real ones."""
    name = "input-independent baseline"
    real_loss = real.final["tiny/loss"]
    if not math.isfinite(real_loss):
        return CheckResult(name, "skip", "training on the real inputs diverged (see the overfit row)",
                           "fix the overfit row first")
    learner = fresh_learner(cfg, data, device, start)
    zeros = torch.zeros_like(x)
    for _ in range(real.steps):
        learner.step(zeros, y)
    blind_loss = learner.evaluate(zeros, y, "tiny")["tiny/loss"]
    values = {"real_loss": real_loss, "zeroed_loss": blind_loss, "steps": real.steps, "samples": len(y)}
    detail = (f"after {real.steps} steps on {len(y)} samples: loss {real_loss:.4g} on real inputs, "
              f"{blind_loss:.4g} on zeroed inputs")
    uses_input = ("the model does not use its input: check that forward() computes from x (not from a constant "
                  "or a stored tensor) and that the inputs reach the first layer")
    if real_loss <= (1 - INPUT_MARGIN) * blind_loss:
        return CheckResult(name, "pass", detail, values=values)
    if abs(real_loss - blind_loss) <= 1e-6 * max(abs(blind_loss), 1e-12):
        return CheckResult(name, "fail", detail + ": the same with and without input", uses_input, values)
    if real_loss > (1 - INPUT_MARGIN) * real.initial_loss:
        return CheckResult(name, "warn", detail + ": inconclusive, the loss barely fell",
                           "see the overfit and lr rows: the lr may be too small to learn anything in these steps",
                           values)
    if real_loss < blind_loss:
        return CheckResult(name, "warn", detail + ": real inputs help only a little", uses_input, values)
    return CheckResult(name, "fail", detail + ": worse with the real inputs", uses_input, values)


def overfit_subset(cfg: Config, run: Memorisation, samples: int) -> CheckResult:
    """The tiny subset memorised: loss below 1 % of its initial value and, for a classifier of
    samples, every one right."""
    accuracy = f", accuracy {run.final['tiny/accuracy']:.0%}" if "tiny/accuracy" in run.final else ""
    detail = (f"{samples} samples: loss {run.initial_loss:.4g} -> {run.final['tiny/loss']:.4g} in {run.steps} steps "
              f"(target < {run.target:.4g}){accuracy}")
    values = {"samples": samples, "steps": run.steps, "initial_loss": run.initial_loss, **run.final}
    if run.loss_reached and run.accuracy_reached:
        return CheckResult("overfit a tiny subset", "pass", detail, values=values)
    return CheckResult("overfit a tiny subset", "fail", detail, run.advice(cfg), values)


def tiny_run_checks(cfg: Config, data: DataSplits, device: torch.device, start: Learner) -> list[CheckResult]:
    """Gradient flow, memorising the tiny subset and the input-independent baseline: one tiny
    training run (regularisation off) and its twin on zeroed inputs."""
    cfg = without_regularisation(cfg)
    x, y = without_augmentation(data).subset("train", TINY_SAMPLES).splits["train"]
    learner = fresh_learner(cfg, data, device, start)
    initial = learner.evaluate(x, y, "tiny")["tiny/loss"]
    flow = gradient_flow(learner, x, y)
    learner.update()  # the first step of memorising, on the gradients just checked
    run = memorise(learner, x, y, TINY_STEPS, initial, steps_taken=1)
    return [flow, input_independent_baseline(cfg, data, device, x, y, run, start), overfit_subset(cfg, run, len(y))]


def _mixes_by_design(model: nn.Module) -> list[str]:
    """Layers that combine the samples of a batch even in eval mode: batch norm without running
    statistics normalises each batch with its own."""
    return [name for name, module in model.named_modules()
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and not module.track_running_stats]


def _mixed_by_gradient(model: nn.Module, x: torch.Tensor) -> list[tuple[int, int]]:
    """(i, j) pairs where sample i's output has a gradient with respect to sample j's input."""
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = model(x)
        pairs = []
        for i in range(len(x)):
            (grad,) = torch.autograd.grad(out[i].sum(), x, retain_graph=i < len(x) - 1, allow_unused=True)
            if grad is None:  # the output does not depend on the input at all
                continue
            size = grad.abs().reshape(len(x), -1).sum(dim=1)  # (B,) gradient reaching each sample
            pairs += [(i, j) for j in range(len(x))
                      if j != i and size[j] > MIXING_TOLERANCE * max(float(size[i]), 1e-30)]
    return pairs


@torch.no_grad()
def _mixed_by_substitution(model: nn.Module, x: torch.Tensor, others: torch.Tensor) -> list[tuple[int, int]]:
    """For integer inputs (token ids), which have no gradient: (i, j) pairs where sample i's output
    changes when sample j alone is replaced by another sample."""
    reference = model(x)
    pairs = []
    for j in range(len(x)):
        replaced = x.clone()
        replaced[j] = others[j]
        outputs = model(replaced)
        pairs += [(i, j) for i in range(len(x))
                  if i != j and not torch.allclose(outputs[i], reference[i], rtol=1e-4, atol=1e-5)]
    return sorted(pairs)


def batch_independence(learner: Learner, data: DataSplits) -> CheckResult:
    """In eval mode, sample i's output depends on sample i's input alone: a wrong view or reshape
    that mixes the batch shows as a gradient from one sample's output into another's input."""
    name = "batch independence"
    model = learner.model
    by_design = _mixes_by_design(model)
    if by_design:
        return CheckResult(name, "skip", f"{', '.join(by_design)}: batch norm without running statistics mixes "
                           "the samples of a batch by design, even in eval mode",
                           "nothing to do, unless that layer should keep running statistics")
    x, _ = without_augmentation(data).splits[_scoring_split(data)]
    size = min(MIXING_SAMPLES, len(x) // (1 if x[:1].is_floating_point() else 2))
    if size < 2:
        return CheckResult(name, "skip", "too few samples to compare")
    was_training = model.training
    model.eval()  # batch norm uses its running statistics here, so it does not mix samples
    try:
        batch = x[:size]
        pairs = _mixed_by_gradient(model, batch) if batch.is_floating_point() else \
            _mixed_by_substitution(model, batch, x[size:2 * size])
    finally:
        model.train(was_training)
    values = {"samples": size, "mixed": pairs}
    if pairs:
        shown = ", ".join(f"output {i} <- input {j}" for i, j in pairs[:4])
        return CheckResult(name, "fail", f"in eval mode, outputs depend on other samples' inputs ({shown})",
                           "look for a view, reshape or transpose in forward() that moves the batch dimension, "
                           "or an operation across dim 0 (a mean or softmax over the batch)", values)
    how = "gradients" if batch.is_floating_point() else "replacing the other samples"
    return CheckResult(name, "pass", f"{size} samples in eval mode: no output depends on another sample's input "
                       f"(by {how})", values=values)


def learning_rate(cfg: Config, data: DataSplits, device: torch.device, plot: Path | None,
                  start: Learner) -> CheckResult:
    """The configured (peak) lr against a short range test's suggestion."""
    report = range_test(fresh_learner(cfg, data, device, start), *data.splits["train"], cfg, steps=LR_STEPS)
    if plot is not None:
        from ..plots import plot_lr_curve

        plot_lr_curve(report, plot)
    lr, suggested = cfg.optimizer.lr, report["suggested_lr"]
    values = {"lr": lr, "suggested_lr": suggested, "steps": report["steps"]}
    if suggested is None:
        return CheckResult("learning rate", "skip", f"lr {lr:g}; the loss did not fall over a {report['steps']}-step "
                           "range test at any lr, so it suggests none", "models that start slowly (transformers) "
                           "need a longer test: mltrain lr-find CONFIG --steps 300, and look at its curve", values)
    detail = f"lr {lr:g}; a {report['steps']}-step range test suggests {suggested:.2g}"
    if lr > LR_ABOVE * suggested or lr < suggested / LR_BELOW:
        side = f"{lr / suggested:.0f}x above" if lr > suggested else f"{suggested / lr:.0f}x below"
        return CheckResult("learning rate", "warn", f"{detail} ({side} it)",
                           f"try --set optimizer.lr={suggested:.2g}, then compare by validation", values)
    return CheckResult("learning rate", "pass", detail, values=values)


def schedule_sanity(cfg: Config, train_size: int | None) -> CheckResult:
    """Warmup, decay and plateau settings against the run's length: parts that would never happen.
    `train_size`: None for a stream of unknown length (the run is train.max_steps)."""
    train, schedule = cfg.train, cfg.scheduler
    drop_last = drops_last(cfg.data.drop_last, compile_mode(cfg.train.compile))
    micro_batches = None if train_size is None else global_batches(train_size, cfg.data.batch_size, 1, drop_last)
    in_epoch, total = run_length(micro_batches, train.accumulate, train.epochs, train.max_steps)
    epochs = math.ceil(total / in_epoch)
    validations = epochs
    if train.val_every_steps:
        shared = math.lcm(train.val_every_steps, in_epoch)  # steps where a mid-epoch and an epoch validation coincide
        validations += total // train.val_every_steps - total // shared
    after_warmup = total - schedule.warmup_steps
    problems = []
    if schedule.warmup_steps >= total:
        problems.append(f"warmup_steps {schedule.warmup_steps} is not shorter than the run ({total} steps): "
                        "the lr never reaches optimizer.lr")
    if schedule.name == "cosine" and schedule.min_lr > cfg.optimizer.lr:
        problems.append(f"cosine min_lr {schedule.min_lr:g} is above optimizer.lr {cfg.optimizer.lr:g}: the lr "
                        "rises instead of decaying")
    if schedule.name == "plateau" and validations < schedule.patience + 2:
        problems.append(f"plateau patience {schedule.patience} is longer than the run ({validations} validations; "
                        f"a drop needs patience + 2): the lr never drops")
    if schedule.name == "step" and schedule.step_size >= after_warmup:
        problems.append(f"step_size {schedule.step_size} is not shorter than the {after_warmup} steps after "
                        "warmup: the lr never drops")
    if schedule.name == "multistep" and schedule.milestones[0] >= after_warmup:
        problems.append(f"the first milestone ({schedule.milestones[0]}) comes after the {after_warmup} steps "
                        "after warmup: the lr never drops")
    values = {"steps": total, "steps_per_epoch": in_epoch, "validations": validations,
              "warmup_steps": schedule.warmup_steps, "scheduler": schedule.name}
    if problems:
        return CheckResult("schedule", "warn", "; ".join(problems),
                           "shorten those settings to fit the run (e.g. warmup under 10 % of the steps), or train "
                           "longer", values)
    warmup = f"warmup {schedule.warmup_steps} of " if schedule.warmup_steps else ""
    return CheckResult("schedule", "pass", f"{schedule.name}: {warmup}{total} steps, {validations} validations",
                       values=values)


def _feature_rows(x: torch.Tensor, axis: int, label: str) -> list[list[str]]:
    """mean, std, min, max of each feature (along `axis`) over the rest of the batch, then all together."""
    moved = x.movedim(axis, -1).reshape(-1, x.shape[axis]).double()  # (values, features)
    rows = [[f"{label} {i}", f"{column.mean():.4g}", f"{column.std():.4g}", f"{column.min():.4g}",
             f"{column.max():.4g}"] for i, column in enumerate(moved.T[:SHOWN_FEATURES])]
    rows.append([f"all {x.shape[axis]}", f"{moved.mean():.4g}", f"{moved.std():.4g}", f"{moved.min():.4g}",
                 f"{moved.max():.4g}"])
    return rows


def look_at_batch(cfg: Config, data: DataSplits, plot: Path | None) -> CheckResult:
    """The first training batch as the model gets it (augmented and normalised): a grid of images, or
    a table of per-feature statistics, or decoded token windows."""
    x_train, y_train = data.splits["train"]
    x, y = next(batches(x_train, y_train, cfg.data.batch_size, epoch_order(len(y_train), cfg.seed, 1)))
    spec = data.spec
    name = "look at the first batch"
    if not x.is_floating_point():
        vocabulary = spec.class_names
        readable = vocabulary and all(len(token) == 1 for token in vocabulary) and int(x.max()) < len(vocabulary)
        rows = [[str(i), repr("".join(vocabulary[t] for t in sample.tolist())) if readable else
                 " ".join(map(str, sample.tolist()))] for i, sample in enumerate(x[:SHOWN_TEXTS].cpu())]
        table = {"title": "first training batch: the first windows, decoded", "columns": ["sample", "input"],
                 "rows": rows}
        return CheckResult(name, "pass", f"{len(x)} samples of {x.shape[1:].numel()} token ids (decoded below)",
                           values={"table": table})
    x = x.detach().float().cpu()
    low, high, mean, std = float(x.min()), float(x.max()), float(x.mean()), float(x.std())
    detail = f"{len(x)} samples {tuple(x.shape[1:])}: mean {mean:.3g}, std {std:.3g}, range {low:.3g} .. {high:.3g}"
    values: dict[str, Any] = {"mean": mean, "std": std, "min": low, "max": high}
    if x.dim() == 4 and x.shape[1] in (1, 3):
        if plot is not None:
            from ..plots import plot_image_batch

            names = spec.class_names or ()
            labels = [names[int(label)] if names and y.dim() == 1 else "" for label in y.cpu()]
            values["plot"] = str(plot_image_batch(x, labels, plot))
            detail += f"; images in {plot}"
    else:
        axis, label = (1, "channel") if x.dim() == 4 else (x.dim() - 1, "feature")
        values["table"] = {"title": "first training batch, as the model gets it",
                           "columns": [label, "mean", "std", "min", "max"], "rows": _feature_rows(x, axis, label)}
        detail += " (table below)"
    if max(abs(low), abs(high)) > SCALE_LIMIT:
        return CheckResult(name, "warn", detail + ": the inputs are not standardised",
                           "scale the inputs to about unit range: standardise each feature with the training "
                           "split's mean and std", values)
    return CheckResult(name, "pass", detail, values=values)


# --- together ---------------------------------------------------------------------------------

def run_cheap_checks(cfg: Config, data: DataSplits, learner: Learner) -> list[CheckResult]:
    """The checks that train nothing and draw no random numbers, for the start of a fit: the data,
    the loss at init (the learner is left as it was) and the schedule against the run's length."""
    return [*data_checks(data), init_loss(learner, data), schedule_sanity(cfg, data.size("train"))]


def preflight(cfg: Config, output_dir: str | Path | None = None) -> dict[str, Any]:
    """Every check, in the order of the recipe, with the plots and preflight.json written to
    `output_dir` (default: <output.dir>/<name>-preflight/). Returns the report."""
    started = time.perf_counter()
    directory = Path(output_dir) if output_dir is not None else default_output_dir(cfg)
    try:
        (directory / "plots").mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create the preflight directory {directory}: {error.strerror or error}; "
                        "choose another with --output-dir") from None
    device = pick_device(cfg.train.device)
    prepared = prepare(cfg, device)
    data, learner = prepared.data, prepared.learner
    schedule = schedule_sanity(cfg, data.size("train"))  # first: a run whose epoch has no batch is refused at once
    flow, blind, overfit = tiny_run_checks(cfg, data, device, learner)  # on copies: `learner` stays untrained
    checks = [
        *data_checks(data),
        init_loss(learner, data),
        dumb_baselines(learner, data),
        blind,
        flow,
        batch_independence(learner, data),
        overfit,
        learning_rate(cfg, data, device, directory / LR_PLOT, learner),
        schedule,
        look_at_batch(cfg, data, directory / BATCH_PLOT),
    ]
    report = {"name": cfg.name, "passed": passed(checks), "device": str(device), "output_dir": str(directory),
              "seconds": round(time.perf_counter() - started, 2), "checks": [check.as_dict() for check in checks]}
    write_atomically(directory / "preflight.json", to_json(report, indent=2) + "\n")
    return report
