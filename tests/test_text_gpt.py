import math

import pytest
import torch
import yaml

import mltrain
from conftest import write_config
from mltrain.config import section_config
from mltrain.data import build_data
from mltrain.data.tokenizer import CharTokenizer
from mltrain.errors import UserError
from mltrain.evaluation import evaluate_checkpoint
from mltrain.models.gpt import GPT

CPU = torch.device("cpu")
CORPUS = "the cat sat on the mat. the dog sat on the log. " * 60  # 2,880 characters, 15 distinct
TRAIN_CHARS = 2592  # the first 90 %


def corpus_file(directory, content: str | bytes = CORPUS):
    path = directory / "corpus.txt"
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def text_config(directory, **data):
    """A tiny gpt on the corpus next to the config (data.path relative to it)."""
    config = {
        "seed": 0,
        "data": {"dataset": "text", "path": "corpus.txt", "block_size": 16, "windows": 256, "batch_size": 32, **data},
        "model": {"arch": "gpt", "d_model": 32, "heads": 2, "layers": 2, "activation": "gelu"},
        "optimizer": {"name": "adamw", "lr": 3e-3},
        "train": {"epochs": 4, "monitor": "val/loss"},
        "output": {"dir": str(directory / "runs")},
    }
    path = directory / "text.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    directory = tmp_path_factory.mktemp("text")
    corpus_file(directory)
    return mltrain.fit(text_config(directory)).run_dir


def test_windows_are_next_character_pairs_over_a_split_by_position(tmp_path):
    data = build_data(section_config("data", dataset="text", path=str(corpus_file(tmp_path)), block_size=16, windows=100),
                      0, CPU)
    vocabulary = data.state["vocabulary"]
    assert vocabulary == "".join(sorted(set(CORPUS))) and data.spec.num_classes == len(vocabulary)
    x, y = data.splits["train"]
    assert x.shape == y.shape == (100, 16) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])  # targets are the inputs shifted by one character
    assert all(CharTokenizer(vocabulary).decode(row.tolist()) in CORPUS[:TRAIN_CHARS] for row in y)
    val_x, val_y = data.splits["val"]
    val_text = CORPUS[TRAIN_CHARS:]
    assert CharTokenizer(vocabulary).decode(val_x.flatten().tolist()) == val_text[:len(val_x) * 16]  # non-overlapping
    assert len(val_x) == (len(val_text) - 1) // 16


def test_a_stored_vocabulary_is_reused_and_enforced(tmp_path):
    cfg = section_config("data", dataset="text", path=str(corpus_file(tmp_path)), block_size=16)
    stored = " .abcdefghijklmnopqrstuvwxyz"
    data = build_data(cfg, 0, CPU, {"vocabulary": stored})
    assert data.spec.num_classes == len(stored) and data.state["vocabulary"] == stored
    corpus_file(tmp_path, CORPUS + "!")
    with pytest.raises(UserError, match="corpus.txt has 1 character.* not in the model's vocabulary: '!'"):
        build_data(cfg, 0, CPU, {"vocabulary": stored})


@pytest.mark.parametrize("content, problem", [
    (None, "no such file"), (b"caf\xe9 " * 100, "not UTF-8"), ("too short", "too short"), ("dir", "not a regular file"),
])
def test_bad_text_files_exit_2_naming_the_file(cli, tmp_path, content, problem):
    if content == "dir":
        (tmp_path / "corpus.txt").mkdir()
    elif content is not None:
        corpus_file(tmp_path, content)
    result = cli("fit", text_config(tmp_path))
    assert result.exit_code == 2 and problem in result.stderr and "corpus.txt" in result.stderr
    assert "Traceback" not in result.output


def test_data_path_is_relative_to_the_config_file_and_required(cli, tmp_path):
    corpus_file(tmp_path)
    result = cli("config", text_config(tmp_path))
    assert result.exit_code == 0 and f"path: {tmp_path / 'corpus.txt'}" in result.stdout
    result = cli("config", text_config(tmp_path, path=None))
    assert result.exit_code == 2 and "data.path" in result.stderr


def test_gpt_shapes_tied_weights_and_loss_at_init():
    torch.manual_seed(0)
    model = GPT((16,), num_outputs=16 * 11, d_model=32, heads=4, layers=2, mlp_ratio=4.0, dropout=0.0,
                activation="gelu")
    tokens = torch.randint(0, 11, (3, 16))
    logits = model(tokens)
    assert logits.shape == (3, 16, 11) and model(tokens[:, :5]).shape == (3, 5, 11)
    assert model.output.weight is model.token_embedding.weight
    targets = torch.randint(0, 11, (3 * 16,))
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets)
    assert abs(loss.item() - math.log(11)) < 0.1
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_gpt_is_causal():
    torch.manual_seed(0)
    model = GPT((12,), num_outputs=12 * 7, d_model=16, heads=2, layers=2, mlp_ratio=2.0, dropout=0.0,
                activation="gelu").eval()
    tokens = torch.randint(0, 7, (2, 12))
    changed = tokens.clone()
    changed[:, 8] = (changed[:, 8] + 1) % 7
    before, after = model(tokens), model(changed)
    assert torch.allclose(before[:, :8], after[:, :8])  # earlier positions never see a later token
    assert not torch.allclose(before[:, 8:], after[:, 8:])


def test_a_short_fit_lowers_the_loss_and_reports_perplexity(text_run):
    records = [yaml.safe_load(line) for line in (text_run / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["val/loss"] < records[0]["val/loss"] < math.log(15)
    assert records[-1]["val/perplexity"] == pytest.approx(math.exp(records[-1]["val/loss"]))
    report = evaluate_checkpoint(text_run, split="val")[0]
    assert report["metrics"]["val/loss"] == pytest.approx(min(r["val/loss"] for r in records), rel=1e-5)
    assert sum(map(sum, report["confusion_matrix"])) == report["samples"] * 16  # every position counted


def test_sample_prints_the_prompt_then_text_and_is_seeded(cli, text_run):
    def sample(*extra):
        result = cli("sample", text_run, "--prompt", "the c", "--tokens", "40", *extra)
        assert result.exit_code == 0, result.output
        return result.stdout.rstrip("\n")

    first = sample("--seed", "1")
    assert first.startswith("the c") and len(first) == 45 and set(first) <= set(CORPUS)
    assert sample("--seed", "1") == first
    assert sample("--seed", "2", "--temperature", "2") != first
    assert sample("--temperature", "0", "--seed", "1") == sample("--temperature", "0", "--seed", "2")


def test_sample_refuses_unknown_characters_and_other_models(cli, text_run, tmp_path):
    result = cli("sample", text_run, "--prompt", "the CAT", "--tokens", "5")
    assert result.exit_code == 2 and "'A'" in result.stderr and "'C'" in result.stderr and "'T'" in result.stderr
    assert cli("fit", write_config(tmp_path)).exit_code == 0
    (spirals_run,) = (tmp_path / "runs").iterdir()
    result = cli("sample", spirals_run, "--prompt", "a", "--tokens", "5")
    assert result.exit_code == 2 and "language model trained on text" in result.stderr and "Traceback" not in result.output



def test_eval_defaults_to_val_when_there_is_no_test_split(text_run, cli):
    result = cli("eval", text_run, "--json")
    assert result.exit_code == 0, result.output
    assert '"split": "val"' in result.stdout


def test_sample_top_k_1_is_the_most_likely_character_at_any_temperature(cli, text_run):
    def sample(*extra):
        result = cli("sample", text_run, "--prompt", "the c", "--tokens", "30", *extra)
        assert result.exit_code == 0, result.output
        return result.stdout

    greedy = sample("--temperature", "0")
    assert sample("--top-k", "1", "--temperature", "5", "--seed", "3") == greedy
    assert sample("--top-k", "1", "--temperature", "5", "--seed", "4") == greedy
    assert sample("--top-k", "3", "--temperature", "5", "--seed", "3") != greedy  # only k=1 is greedy


@pytest.mark.parametrize("arguments, needle", [
    (("--top-k", "0"), "--top-k"),
    (("--temperature=-1",), "--temperature"),
    (("--tokens", "x"), "--tokens"),
])
def test_sample_argument_errors_exit_2_naming_the_flag(cli, text_run, arguments, needle):
    result = cli("sample", text_run, "--prompt", "the c", *arguments)
    assert result.exit_code == 2 and needle in result.stderr and "Traceback" not in result.output
