"""The training engine: schedules, accumulation, clipping, EMA, compile, step budget."""

import math

import pytest
import torch

import mltrain
from conftest import read_jsonl, write_config
from mltrain.config import section_config
from mltrain.losses import SoftmaxCrossEntropy
from mltrain.data import DataSpec
from mltrain.build import build_learner
from mltrain.learner import Learner
from mltrain.metrics import UNCHECKED_LOSSES, UNCOUNTED_BATCHES, Accumulator, LossGuard
from mltrain.errors import UserError
from mltrain.optim import LRSchedule, build_optimizer, parameter_groups, run_length
from mltrain.sinks import Sink

BASE_LR = 0.5


def lr_curve(steps: int, total: int, validations=(), **scheduler) -> list[float]:
    """The lr after each of `steps` optimizer steps."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=BASE_LR)
    schedule = LRSchedule(section_config("scheduler", **scheduler), optimizer, total, monitor_mode="min")
    curve = schedule.lrs
    for step in range(1, steps + 1):
        optimizer.step()
        schedule.after_step(step)
        if step <= len(validations):
            schedule.after_validation(validations[step - 1], step)
        curve += schedule.lrs
    return curve


def test_constant_and_warmup():
    assert lr_curve(10, 10, name="constant") == pytest.approx([BASE_LR] * 11)
    warm = lr_curve(10, 10, name="constant", warmup_steps=4)
    assert warm[:5] == pytest.approx([BASE_LR * (0.25 + 0.75 * s / 4) for s in range(5)])
    assert warm[4:] == pytest.approx([BASE_LR] * 7)


def test_step_multistep_exponential_follow_their_formulas():
    assert lr_curve(12, 12, name="step", step_size=5, gamma=0.5) == \
        pytest.approx([BASE_LR * 0.5 ** (s // 5) for s in range(13)])
    assert lr_curve(12, 12, name="multistep", milestones=[3, 7], gamma=0.1) == \
        pytest.approx([BASE_LR * 0.1 ** sum(s >= m for m in (3, 7)) for s in range(13)])
    assert lr_curve(12, 12, name="exponential", decay=0.9) == pytest.approx([BASE_LR * 0.9 ** s for s in range(13)])


def test_cosine_after_warmup_follows_its_formula():
    total, warmup, floor = 20, 5, 0.01
    curve = lr_curve(total, total, name="cosine", warmup_steps=warmup, min_lr=floor)
    span = total - warmup
    expected = [floor + (BASE_LR - floor) * (1 + math.cos(math.pi * s / span)) / 2 for s in range(span + 1)]
    assert curve[warmup:] == pytest.approx(expected)


def test_onecycle_rises_to_lr_then_anneals():
    total = 100
    curve = lr_curve(total, total, name="onecycle", pct_start=0.3)
    peak = max(range(len(curve)), key=curve.__getitem__)
    assert curve[0] == pytest.approx(BASE_LR / 25)
    assert curve[peak] == pytest.approx(BASE_LR, rel=1e-3) and abs(peak - 30) <= 1
    assert curve[-1] < BASE_LR / 1e4


def test_plateau_drops_after_patience_validations_without_improvement():
    curve = lr_curve(6, 6, validations=[1.0, 0.5, 0.6, 0.7, 0.8, 0.9], name="plateau", patience=2, gamma=0.1)
    assert curve[:5] == pytest.approx([BASE_LR] * 5)  # improvements, then two bad validations
    assert curve[5] == pytest.approx(BASE_LR * 0.1)  # the third bad validation drops the lr


def test_every_parameter_is_in_the_optimizer_from_the_start_frozen_ones_too():
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 3))
    model[0].requires_grad_(False)
    groups = parameter_groups(model, section_config("optimizer", name="adamw", weight_decay=0.1))
    assert [len(group["params"]) for group in groups] == [2, 2]  # weights decay; biases never do
    assert {id(p) for group in groups for p in group["params"]} == {id(p) for p in model.parameters()}


def test_every_group_follows_the_schedule_at_its_scale_min_lr_included():
    """optimizer.groups: a backbone at lr_scale 0.1 warms up and anneals in proportion, to a tenth
    of the cosine's min_lr; records name each group's lr."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 3))
    cfg = section_config("optimizer", name="sgd", lr=0.1, groups=({"params": "0.*", "lr_scale": 0.1},))
    optimizer = build_optimizer(cfg, parameter_groups(model, cfg))
    schedule = LRSchedule(section_config("scheduler", name="cosine", min_lr=0.01, warmup_steps=2), optimizer, 10,
                          monitor_mode="min")
    for step in range(1, 11):
        schedule.after_step(step)
        assert schedule.named_lrs()["lr/0.*"] == pytest.approx(0.1 * schedule.named_lrs()["lr"])
    assert schedule.named_lrs() == pytest.approx({"lr": 0.01, "lr/0.*": 0.001})


def test_a_stream_of_unknown_length_needs_max_steps():
    assert run_length(None, 2, epochs=5, max_steps=30) == (30, 30)
    assert run_length(41, 2, epochs=3, max_steps=None) == (21, 63)
    with pytest.raises(UserError, match="train.max_steps"):
        run_length(None, 2, epochs=5, max_steps=None)


def make_learner(model, **options):
    spec = DataSpec((4,), 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    return Learner(model, SoftmaxCrossEntropy(spec), optimizer, "fp32", torch.device("cpu"), **options)


def test_accumulated_micro_batches_match_one_big_batch():
    torch.manual_seed(0)
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    big, small = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    small.load_state_dict(big.state_dict())
    make_learner(big).step(x, y)
    accumulating = make_learner(small)
    for part in range(4):
        accumulating.forward_backward(x[part * 4:(part + 1) * 4], y[part * 4:(part + 1) * 4], scale=0.25)
    accumulating.update()
    for a, b in zip(big.parameters(), small.parameters()):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("steps, bad_step", [(5, 3), (UNCHECKED_LOSSES, 300)])
def test_nan_guard_names_the_first_bad_step_of_accumulated_micro_batches(steps, bad_step):
    # Two micro-batches a step; the second one of `bad_step` alone is non-finite (its gradients are
    # dropped). Past UNCHECKED_LOSSES losses the guard reads them early: bad_step's among them.
    learner, guard = make_learner(torch.nn.Linear(4, 3)), LossGuard()
    x, y = torch.randn(4, 4), torch.randint(0, 3, (4,))
    for step in range(1, steps + 1):
        for micro_batch in range(2):
            loss, _ = learner.forward_backward(x * math.nan if step == bad_step and micro_batch else x, y, scale=0.5)
            guard.add(step, loss)
            assert len(guard._steps) < UNCHECKED_LOSSES  # what it holds between reads is bounded
            assert len(guard._losses) < UNCOUNTED_BATCHES  # and the graphs it keeps
        if step == bad_step:
            learner.optimizer.zero_grad()
        learner.update()
    assert guard.first_non_finite_step() == bad_step
    assert guard.first_non_finite_step() == bad_step  # read again: still the first


class BiasOnly(torch.nn.Module):
    """Its output is a view of its parameter, which every optimizer step changes in place."""

    def __init__(self):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.tensor([0.0, 0.1, 0.2]))

    def forward(self, x):
        return self.bias.expand(len(x), -1)


def test_running_accuracy_counts_each_batch_as_its_own_step_predicted_it():
    torch.manual_seed(0)
    learner = make_learner(BiasOnly())  # SGD at lr 1: the favoured class changes as it learns
    totals = Accumulator(torch.device("cpu"), classifies=True, predict=learner.predictions)
    correct = 0
    for _ in range(30):
        x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
        loss, logits = learner.forward_backward(x, y)
        correct += int((logits.argmax(dim=-1) == y).sum())  # counted before the update changes the bias
        totals.update(loss, logits, y)
        learner.update()
    assert totals.compute("train")["train/accuracy"] == correct / 240


def test_accumulation_end_to_end_matches_a_bigger_batch(tmp_path):
    common = dict(data={"batch_size": 64, "val_split": 0.0}, optimizer={"name": "sgd", "lr": 0.1})
    big = mltrain.fit(write_config(tmp_path, name="big", **common))
    common["data"] = {"batch_size": 16, "val_split": 0.0}
    small = mltrain.fit(write_config(tmp_path, name="small", train={"epochs": 3, "accumulate": 4}, **common))
    assert big.summary["steps"] == small.summary["steps"]
    assert big.summary["global_batch_size"] == small.summary["global_batch_size"] == 64
    weights = [torch.load(r.run_dir / "checkpoints/last.pt", weights_only=True)["model"] for r in (big, small)]
    for key in weights[0]:
        torch.testing.assert_close(weights[0][key], weights[1][key], rtol=1e-4, atol=1e-5)


def test_clipping_bounds_the_update():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    before = [p.detach().clone() for p in model.parameters()]
    learner = make_learner(model, grad_clip=0.01)
    learner.forward_backward(torch.randn(8, 4) * 100, torch.randint(0, 3, (8,)))
    norm = learner.update()
    assert float(norm) > 0.01  # the raw gradient was larger than the bound...
    with torch.no_grad():
        change = torch.sqrt(sum(((p - b) ** 2).sum() for p, b in zip(model.parameters(), before)))
    assert float(change) == pytest.approx(0.01, rel=1e-3)  # ...and SGD at lr 1 moved by exactly the bound


def test_step_records_log_lr_and_grad_norm(tmp_path):
    result = mltrain.fit(write_config(tmp_path, train={"epochs": 2, "log_every_steps": 2, "grad_clip": 1.0}))
    records = read_jsonl(result.run_dir / "metrics.jsonl")
    step_records = [r for r in records if "grad_norm" in r]
    assert [r["step"] for r in step_records][:3] == [2, 4, 6]
    assert all(r["lr"] > 0 and r["grad_norm"] > 0 for r in step_records)


def test_max_steps_and_mid_epoch_validation(tmp_path):
    result = mltrain.fit(write_config(tmp_path, train={"epochs": 100, "max_steps": 10, "val_every_steps": 3}))
    assert result.summary["steps"] == 10
    records = read_jsonl(result.run_dir / "metrics.jsonl")
    epoch_ends = [int(line.split(",")[1]) for line in (result.run_dir / "metrics.csv").read_text().splitlines()[1:]]
    assert epoch_ends == [7, 10]  # 7 steps an epoch; the step budget ends the second
    assert [r["step"] for r in records if "val/loss" in r] == [3, 6, 7, 9, 10]


def test_ema_weights_differ_and_are_the_ones_evaluated(tmp_path):
    result = mltrain.fit(write_config(tmp_path, train={"epochs": 2, "ema": 0.9}))
    checkpoint = torch.load(result.run_dir / "checkpoints/last.pt", weights_only=True)
    raw, averaged = checkpoint["model"], checkpoint["ema"]["weights"]
    assert not all(torch.equal(raw[k], averaged[k]) for k in raw)
    ema_loss, raw_loss = _val_loss(result.run_dir, averaged), _val_loss(result.run_dir, raw)
    assert result.summary["final"]["val/loss"] == pytest.approx(ema_loss)
    assert ema_loss != pytest.approx(raw_loss)


def _val_loss(run_dir, weights) -> float:
    from mltrain.config import load_config
    from mltrain.data import build_data

    cfg = load_config(run_dir / "config.yaml", ["train.ema=null"])
    data = build_data(cfg.data, cfg.seed, torch.device("cpu"))
    learner = build_learner(cfg, data.spec, torch.device("cpu"))
    learner.model.load_state_dict(weights)
    return learner.evaluate(*data.splits["val"], "val")["val/loss"]


def test_compile_gives_checkpoints_with_plain_keys(tmp_path):
    plain = mltrain.fit(write_config(tmp_path, name="plain", train={"epochs": 1}))
    compiled = mltrain.fit(write_config(tmp_path, name="compiled", train={"epochs": 1, "compile": True}))
    keys = [set(torch.load(r.run_dir / "checkpoints/last.pt", weights_only=True)["model"]) for r in (plain, compiled)]
    assert keys[0] == keys[1] and not any("_orig_mod" in key for key in keys[1])
    assert mltrain.evaluate(compiled.run_dir)["metrics"]["test/accuracy"] == compiled.summary["test"]["test/accuracy"]


class DeterminismSeen(Sink):
    """Whether torch was set to deterministic algorithms while the run trained."""

    def __init__(self):
        self.seen: list[bool] = []

    def step(self, record):
        self.seen.append(torch.are_deterministic_algorithms_enabled())


def test_deterministic_runs_repeat(tmp_path):
    config = write_config(tmp_path, model={"dropout": 0.2}, train={"epochs": 2, "deterministic": True,
                                                                    "log_every_steps": 3})
    sinks = [DeterminismSeen(), DeterminismSeen()]
    try:
        runs = [mltrain.fit(config, sinks=[sink]) for sink in sinks]
    finally:
        torch.use_deterministic_algorithms(False)
    assert all(sink.seen and all(sink.seen) for sink in sinks)
    assert runs[0].summary["final"]["val/loss"] == runs[1].summary["final"]["val/loss"]
    weights = [torch.load(r.run_dir / "checkpoints/last.pt", weights_only=True)["model"] for r in runs]
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])


def test_label_smoothing_raises_the_loss_of_confident_predictions():
    spec = DataSpec((4,), 3)
    logits, y = torch.tensor([[10.0, -10.0, -10.0]]), torch.tensor([0])
    assert SoftmaxCrossEntropy(spec, label_smoothing=0.1).loss(logits, y) > SoftmaxCrossEntropy(spec).loss(logits, y) + 0.5


def test_label_smoothing_trains_and_is_refused_off_the_softmax_head(tmp_path, cli):
    assert mltrain.fit(write_config(tmp_path, train={"epochs": 1, "label_smoothing": 0.1})).summary["steps"] > 0
    result = cli("config", write_config(tmp_path, name="sig", model={"head": "sigmoid"},
                                        train={"label_smoothing": 0.1}))
    assert result.exit_code == 2 and "softmax head only" in result.stderr


def test_asking_for_the_gradient_norm_leaves_the_step_as_it_was():
    torch.manual_seed(0)
    x, y = torch.randn(8, 4) * 10, torch.randint(0, 3, (8,))
    asked, plain = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    plain.load_state_dict(asked.state_dict())
    learners = make_learner(asked), make_learner(plain)
    for learner in learners:
        learner.forward_backward(x, y)
    clipped_at_infinity = torch.nn.utils.clip_grad_norm_(plain.parameters(), math.inf)
    norm = learners[0].update(want_grad_norm=True)
    assert learners[1].update() is None
    assert float(norm) == float(clipped_at_infinity)  # bit for bit
    assert all(torch.equal(a, b) for a, b in zip(asked.parameters(), plain.parameters()))


class FixedRows(torch.nn.Module):
    """Eight rows of outputs whatever the batch: right for a batch of eight only."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.linear(x[:1]).expand(8, -1)


def test_outputs_are_checked_again_when_the_batch_shape_changes():
    learner = make_learner(FixedRows())
    learner.forward_backward(torch.randn(8, 4), torch.randint(0, 3, (8,)))
    learner.update()
    with pytest.raises(UserError, match=r"returned outputs of shape \(8, 3\) for a batch of 5"):
        learner.forward_backward(torch.randn(5, 4), torch.randint(0, 3, (5,)))


@pytest.mark.parametrize("gather_bytes", [1 << 30, 4 * (4 * 3 * 16 * 16)])  # up to 64 batches a gather, or 4
def test_batches_gathered_together_are_those_of_one_gather_each(monkeypatch, gather_bytes):
    from mltrain.data import inputs
    from mltrain.data.augment import Augment

    monkeypatch.setattr(inputs, "GATHER_BYTES", gather_bytes)
    torch.manual_seed(0)
    images, y = torch.randint(0, 256, (203, 3, 16, 16), dtype=torch.uint8), torch.arange(203)
    order = torch.randperm(203)
    configs = section_config("data", dataset="mnist", augment=[{"name": "crop", "padding": 2}, {"name": "flip"}]).augment
    augments = [Augment(configs, seed=0, device=torch.device("cpu")) for _ in range(2)]
    source = inputs.Inputs(images, inputs.channel_stats(images), augments[0])
    one_at_a_time = inputs.Inputs(images, source.normalise, augments[1])
    taken = list(source.batches(y, 4, order))
    assert len(taken) == 51
    for start, (x, y_batch) in zip(range(0, 203, 4), taken):
        index = order[start:start + 4]
        assert torch.equal(y_batch, y[index])
        assert torch.equal(x, one_at_a_time[index])  # normalised, then augmented with the same draws
