import math

import pytest
import torch
import torch.nn.functional as F
import yaml

from mltrain.config import section_config
from mltrain.data import build_data
from mltrain.errors import UserError
from mltrain.evaluation import evaluate_checkpoint
from mltrain.losses import SigmoidCrossEntropy, SoftmaxCrossEntropy
from mltrain.metrics import Accumulator

CPU = torch.device("cpu")
TASKS = ("parity", "adding", "sorting")


def generate(dataset: str, seed: int = 0, **keys):
    return build_data(section_config("data", dataset=dataset, samples=200, length=12, **keys), seed, CPU)


def gru_config(directory, **data):
    config = {"data": {"batch_size": 32, **data}, "model": {"arch": "gru", "hidden_size": 48},
              "optimizer": {"lr": 0.01}, "train": {"epochs": 6}, "output": {"dir": str(directory / "runs")}}
    path = directory / "gru.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def everything(data):
    return (torch.cat([data.splits[split][0] for split in data.splits]),
            torch.cat([data.splits[split][1] for split in data.splits]))


@pytest.mark.parametrize("dataset", TASKS)
def test_each_task_is_seeded_and_split(dataset):
    first, again, other = generate(dataset, 3), generate(dataset, 3), generate(dataset, 4)
    for split in first.splits:
        assert torch.equal(first.splits[split][0], again.splits[split][0])
        assert torch.equal(first.splits[split][1], again.splits[split][1])
    assert not torch.equal(first.splits["train"][0], other.splits["train"][0])
    assert set(first.splits) == {"train", "val", "test"}
    assert sum(first.size(split) for split in first.splits) == 200
    assert first.splits["train"][0].shape[1:] == first.spec.sample_shape


def test_parity_labels_are_the_parity():
    data = generate("parity")
    x, y = everything(data)
    assert x.shape == (200, 12) and x.dtype == torch.float32 and set(x.unique().tolist()) == {0.0, 1.0}
    assert y.dtype == torch.int64 and torch.equal(y, x.sum(dim=1).long() % 2)
    assert data.spec.num_classes == 2 and set(y.tolist()) == {0, 1}


def test_adding_targets_are_the_sum_of_the_two_marked_values():
    data = generate("adding")
    x, y = everything(data)
    values, markers = x[..., 0], x[..., 1]
    assert x.shape == (200, 12, 2) and (markers.sum(dim=1) == 2).all()
    assert ((0 <= values) & (values < 1)).all()
    assert y.dtype == torch.float32 and torch.allclose(y, (values * markers).sum(dim=1))
    assert data.spec.num_classes is None and data.spec.target_shape == ()


def test_sorting_targets_are_the_digits_sorted():
    data = generate("sorting", vocab_size=7)
    x, y = everything(data)
    assert x.shape == (200, 12, 7) and torch.equal(x.sum(dim=-1), torch.ones(200, 12))  # one-hot
    assert y.shape == (200, 12) and torch.equal(y, x.argmax(dim=-1).sort(dim=1).values)
    assert data.spec.num_classes == 7 and data.spec.target_shape == (12,)


def test_softmax_head_scores_every_position():
    spec = generate("sorting", vocab_size=5).spec
    criterion = SoftmaxCrossEntropy(spec)
    assert criterion.num_outputs == 12 * 5
    logits, y = torch.randn(4, 12 * 5), torch.randint(0, 5, (4, 12))
    expected = F.cross_entropy(logits.view(4 * 12, 5), y.flatten())
    assert torch.allclose(criterion.loss(logits, y), expected)
    assert torch.allclose(criterion.loss(logits.view(4, 12, 5), y), expected)  # a model's own (B, T, V)
    assert criterion.predict(logits).shape == (4, 12)
    with pytest.raises(UserError, match="softmax"):
        SigmoidCrossEntropy(spec)  # 5 classes per position: one-vs-rest per position is refused


def test_accumulator_averages_over_tokens_and_reports_perplexity():
    totals = Accumulator(CPU, classifies=True)
    totals.update(torch.tensor(1.0), torch.zeros(1, 4, dtype=torch.long), torch.tensor([[0, 0, 0, 1]]))
    totals.update(torch.tensor(2.0), torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 2, dtype=torch.long))
    metrics = totals.compute("val")
    assert totals.count == 3  # samples
    assert metrics["val/loss"] == pytest.approx((1.0 * 4 + 2.0 * 4) / 8)
    assert metrics["val/accuracy"] == pytest.approx(7 / 8)
    assert metrics["val/perplexity"] == pytest.approx(math.exp(metrics["val/loss"]))


def test_gru_learns_sorting_and_eval_counts_positions(cli, tmp_path):
    config = gru_config(tmp_path, dataset="sorting", samples=600, length=4, vocab_size=3)
    assert cli("fit", config).exit_code == 0
    (run,) = (tmp_path / "runs").iterdir()
    report = evaluate_checkpoint(run)[0]
    positions = report["samples"] * 4
    assert sum(map(sum, report["confusion_matrix"])) == positions and report["class_names"] == ["0", "1", "2"]
    assert report["metrics"]["test/accuracy"] > 0.9  # chance is about 1/3 per position


@pytest.mark.parametrize("key, value", [("length", 1), ("samples", 3), ("vocab_size", 1)])
def test_sequence_keys_are_range_checked(cli, tmp_path, key, value):
    config = gru_config(tmp_path, dataset="sorting")
    result = cli("config", config, "--set", f"data.{key}={value}")
    assert result.exit_code == 2 and f"data.{key}" in result.stderr
