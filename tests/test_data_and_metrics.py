import itertools

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix as sk_confusion
from sklearn.metrics import mean_absolute_error, mean_squared_error, precision_recall_fscore_support, r2_score

from mltrain.config import section_config
from mltrain.data import TARGET_SCALE, build_data
from mltrain.data.dataset import batches
from mltrain.data.orders import epoch_order
from mltrain.data.stream import SeededPermutation
from mltrain.metrics import COUNTED_AT_ONCE, UNCOUNTED_BATCHES, Accumulator, confusion_matrix, per_class_scores

CPU = torch.device("cpu")


def test_digits_shapes_and_a_fixed_stratified_test_split():
    first = build_data(section_config("data", dataset="digits"), seed=0, device=CPU)
    other_seed = build_data(section_config("data", dataset="digits"), seed=5, device=CPU)
    x, y = first.splits["train"]
    assert x.shape[1:] == (1, 8, 8) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert sum(first.size(split) for split in first.splits) == 1797
    assert first.spec.num_classes == 10
    assert torch.equal(first.splits["test"][1], other_seed.splits["test"][1])  # test never moves
    assert not torch.equal(first.splits["val"][1], other_seed.splits["val"][1])  # val follows the seed
    counts = torch.bincount(first.splits["test"][1], minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: about 36 of each class


def test_spirals_are_seeded_and_sized():
    cfg = section_config("data", dataset="spirals", classes=4, points=50, val_split=0.2)
    a, b = (build_data(cfg, seed=1, device=CPU) for _ in range(2))
    c = build_data(cfg, seed=2, device=CPU)
    assert torch.equal(a.splits["train"][0], b.splits["train"][0])
    assert not torch.equal(a.splits["train"][0], c.splits["train"][0])
    assert sum(a.size(split) for split in a.splits) == 200 and a.spec.sample_shape == (2,)
    assert set(a.splits["train"][1].tolist()) == {0, 1, 2, 3}


def test_no_val_split_when_val_split_is_zero():
    data = build_data(section_config("data", dataset="spirals", val_split=0.0, points=20), seed=0, device=CPU)
    assert set(data.splits) == {"train", "test"}


def test_epoch_order_depends_on_seed_and_epoch_only():
    assert torch.equal(epoch_order(100, 3, 1), epoch_order(100, 3, 1))
    assert not torch.equal(epoch_order(100, 3, 1), epoch_order(100, 3, 2))
    assert sorted(epoch_order(100, 3, 1).tolist()) == list(range(100))


def test_batches_cover_every_sample_once():
    x = torch.arange(10).float().unsqueeze(1)
    y = torch.arange(10)
    seen = torch.cat([yb for _, yb in batches(x, y, 3, epoch_order(10, 0, 1))])
    assert sorted(seen.tolist()) == list(range(10))
    assert [len(yb) for _, yb in batches(x, y, 4)] == [4, 4, 2]


def test_a_stream_resumed_from_its_state_continues_the_epoch_exactly():
    x, y = torch.arange(22).float().unsqueeze(1), torch.arange(22)
    whole = [yb.tolist() for _, yb, _ in SeededPermutation(x, y, 4, seed=3).batches(1, 0, 1)]
    first = SeededPermutation(x, y, 4, seed=3)
    taken = [yb.tolist() for _, yb, _ in itertools.islice(first.batches(1, 0, 1), 2)]
    resumed = SeededPermutation(x, y, 4, seed=3)
    resumed.load_state_dict(first.state_dict())
    assert taken + [yb.tolist() for _, yb, _ in resumed.batches(1, 0, 1)] == whole
    assert next(resumed.batches(2, 0, 1))[1].tolist() != whole[0]  # a new epoch starts anew, reshuffled
    with pytest.raises(ValueError, match="served 99 samples of an epoch of 22"):
        resumed.load_state_dict({"epoch": 1, "served": 99})


def test_two_processes_share_each_global_batch_of_the_stream():
    x, y = torch.arange(20).float().unsqueeze(1), torch.arange(20)
    single = [yb.tolist() for _, yb, _ in SeededPermutation(x, y, 8, seed=0).batches(1, 0, 1)]
    ranks = [list(SeededPermutation(x, y, 4, seed=0).batches(1, rank, 2)) for rank in (0, 1)]
    assert [a[1].tolist() + b[1].tolist() for a, b in zip(*ranks)] == single
    assert [size for _, _, size in ranks[0]] == [8, 8, 4]  # each part knows its global batch's size


def test_accumulator_weights_batches_by_size():
    totals = Accumulator(CPU, classifies=True)
    totals.update(torch.tensor(1.0), torch.tensor([0, 0, 0]), torch.tensor([0, 0, 1]))
    totals.update(torch.tensor(4.0), torch.tensor([1]), torch.tensor([1]))
    metrics = totals.compute("train")
    assert metrics["train/loss"] == pytest.approx((1.0 * 3 + 4.0 * 1) / 4)
    assert metrics["train/accuracy"] == pytest.approx(3 / 4)


def test_accumulator_losses_wait_in_checkpoints_as_they_are_and_damaged_ones_are_refused():
    totals = Accumulator(CPU, classifies=False)
    for value in range(UNCOUNTED_BATCHES + 5):  # 64 summed, 5 waiting
        totals.update(torch.tensor(value / 7), None, torch.zeros(3))
    state = totals.state_dict()
    assert len(state["unsummed_losses"]) == 5 and state["unsummed_targets"] == [3] * 5
    again = Accumulator(CPU, classifies=False)
    again.load_state_dict(state)
    assert again.compute("train") == totals.compute("train")
    for key, damaged in [("unsummed_losses", torch.ones(5, 2)), ("unsummed_losses", torch.ones(5, dtype=torch.int64)),
                         ("unsummed_losses", torch.ones(UNCOUNTED_BATCHES)), ("unsummed_targets", ["x"] * 5),
                         ("unsummed_targets", [10**9] * 5)]:
        with pytest.raises(ValueError, match=key):
            Accumulator(CPU, classifies=False).load_state_dict({**state, key: damaged})


def test_accumulator_counts_waiting_logits_as_predicting_each_batch_would():
    torch.manual_seed(0)
    batches_of_logits = [torch.randn(size, 5) for size in [7] * (UNCOUNTED_BATCHES + 3) + [2]]
    targets = [torch.randint(0, 5, (len(logits),)) for logits in batches_of_logits]
    large = -(-COUNTED_AT_ONCE // 5)  # samples whose logits are counted as they come
    batches_of_logits.append(torch.randn(large, 5))
    targets.append(torch.randint(0, 5, (large,)))
    waiting = Accumulator(CPU, classifies=True, predict=lambda logits: logits.argmax(dim=-1))
    at_once = Accumulator(CPU, classifies=True)
    expected = 0
    for logits, y in zip(batches_of_logits, targets):
        waiting.update(torch.tensor(1.0), logits, y)
        at_once.update(torch.tensor(1.0), logits.argmax(dim=-1), y)
        expected += int((logits.argmax(dim=-1) == y).sum())
        assert len(waiting._uncounted) < UNCOUNTED_BATCHES  # what waits is bounded
    assert not waiting._uncounted  # the large batch was counted at once, with those before it
    assert waiting.state_dict()["correct"] == expected  # a checkpoint holds every batch's count
    assert waiting.compute("train") == at_once.compute("train")
    assert waiting.compute("train")["train/accuracy"] == pytest.approx(expected / sum(map(len, targets)))


def test_per_class_scores_match_scikit_learn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 200)
    predicted = np.where(rng.random(200) < 0.7, y, rng.integers(0, 4, 200))
    predicted[predicted == 3] = 2  # class 3 is never predicted: precision undefined -> 0
    confusion = confusion_matrix(torch.from_numpy(predicted), torch.from_numpy(y), 4)
    assert confusion.tolist() == sk_confusion(y, predicted, labels=range(4)).tolist()
    scores = per_class_scores(confusion)
    precision, recall, f1, support = precision_recall_fscore_support(y, predicted, labels=range(4), zero_division=0)
    assert scores["precision"] == pytest.approx(precision.tolist())
    assert scores["recall"] == pytest.approx(recall.tolist())
    assert scores["f1"] == pytest.approx(f1.tolist())
    assert scores["support"] == support.tolist()


def test_default_threads_leave_busy_cores_to_other_processes(monkeypatch):
    from mltrain import devices

    monkeypatch.setattr(devices, "_busy_cores", lambda seconds=devices.PROBE_SECONDS: 0.1)
    assert devices.default_threads(2) == 2  # idle machine: every core
    monkeypatch.setattr(devices, "_busy_cores", lambda seconds=devices.PROBE_SECONDS: 1.0)
    assert devices.default_threads(2) == 1  # one core busy elsewhere: leave it
    monkeypatch.setattr(devices, "_busy_cores", lambda seconds=devices.PROBE_SECONDS: 3.7)
    assert devices.default_threads(2) == 1
    monkeypatch.setattr(devices, "_busy_cores", lambda seconds=devices.PROBE_SECONDS: None)
    assert devices.default_threads(4) == 3  # no /proc/stat: one core left free


def test_the_busy_probe_sees_a_busy_process():
    import subprocess
    import sys

    from mltrain.devices import _busy_cores

    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        import time
        time.sleep(0.3)
        assert _busy_cores(0.3) >= 0.8
    finally:
        spinner.kill()
        spinner.wait()


def test_digits_split_is_stratified_and_seeded():
    import numpy as np

    from mltrain.data.splits import hold_out

    y = np.repeat(np.arange(3), [50, 30, 20])
    keep_x, keep_y, held_x, held_y = hold_out(np.arange(100), y, 0.2, seed=3)
    assert np.bincount(held_y).tolist() == [10, 6, 4]
    assert sorted(np.concatenate([keep_x, held_x]).tolist()) == list(range(100))
    assert hold_out(np.arange(100), y, 0.2, seed=3)[2].tolist() == held_x.tolist()
    assert hold_out(np.arange(100), y, 0.2, seed=4)[2].tolist() != held_x.tolist()


@pytest.mark.parametrize("target_shape", [(), (3,)])
def test_regression_errors_match_scikit_learn_over_batches_and_a_saved_state(target_shape):
    rng = np.random.default_rng(0)
    y = rng.normal(50.0, 20.0, (70, *target_shape))
    predicted = y + rng.normal(0.0, 5.0, y.shape)
    totals = Accumulator(torch.device("cpu"), classifies=False)
    for start in (0, 32):  # two batches, then the rest after a save and load (a mid-epoch resume)
        totals.update(torch.tensor(1.0), torch.tensor(predicted[start:start + 32]), torch.tensor(y[start:start + 32]))
    resumed = Accumulator(torch.device("cpu"), classifies=False)
    resumed.load_state_dict(totals.state_dict())
    resumed.update(torch.tensor(1.0), torch.tensor(predicted[64:]), torch.tensor(y[64:]))
    metrics = resumed.compute("test")
    assert metrics["test/mse"] == pytest.approx(mean_squared_error(y, predicted), rel=1e-9)
    assert metrics["test/mae"] == pytest.approx(mean_absolute_error(y, predicted), rel=1e-9)
    assert metrics["test/r2"] == pytest.approx(r2_score(y, predicted), rel=1e-9)
    assert metrics["test/loss"] == pytest.approx(1.0) and "test/accuracy" not in metrics


def test_regression_data_keeps_its_training_targets_scale():
    cfg = section_config("data", dataset="adding", length=4, samples=100)
    data = build_data(cfg, seed=0, device=torch.device("cpu"))
    train_y = data.splits["train"][1].double()
    scale = data.state[TARGET_SCALE]
    assert scale["mean"] == pytest.approx([train_y.mean().item()]) and scale["std"] == pytest.approx(
        [train_y.std(correction=0).item()])
    stored = {TARGET_SCALE: {"mean": [1.0], "std": [2.0]}}
    assert build_data(cfg, seed=0, device=torch.device("cpu"), state=stored).state == stored
    assert TARGET_SCALE not in build_data(section_config("data", dataset="parity", samples=40), 0,
                                          torch.device("cpu")).state
