import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix as sk_confusion
from sklearn.metrics import precision_recall_fscore_support

from mltrain.config import section_config
from mltrain.data import build_data
from mltrain.data.dataset import batches, epoch_order
from mltrain.metrics import Accumulator, confusion_matrix, per_class_scores

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


def test_accumulator_weights_batches_by_size():
    totals = Accumulator(CPU, classifies=True)
    totals.update(torch.tensor(1.0), torch.tensor([0, 0, 0]), torch.tensor([0, 0, 1]))
    totals.update(torch.tensor(4.0), torch.tensor([1]), torch.tensor([1]))
    metrics = totals.compute("train")
    assert metrics["train/loss"] == pytest.approx((1.0 * 3 + 4.0 * 1) / 4)
    assert metrics["train/accuracy"] == pytest.approx(3 / 4)


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
