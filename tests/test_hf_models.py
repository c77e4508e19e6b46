"""`model.arch: hf/<folder>`: tiny Hugging Face models written with save_pretrained beside a
tokenizer.json, fine-tuned from their weights: a causal language model on a text (then sampled),
and a sequence classifier on an hf dataset's text column (then evaluated and predicted). Nothing
is downloaded: the Hub is offline for every test here."""

import json
import random
from pathlib import Path

import pytest
import torch

import mltrain
from conftest import REPO
from formats import source_config
from mltrain.data.tokenizer import PADDING, train_bpe
from mltrain.registry import ARCHITECTURES

transformers = pytest.importorskip("transformers")
datasets = pytest.importorskip("datasets")
parquet = pytest.importorskip("pyarrow.parquet")
pa = pytest.importorskip("pyarrow")

DOCS = (REPO / "configs" / "text" / "mltrain_docs.txt").read_text()[:20_000]
POSITIVE, NEGATIVE = ("good", "great", "fine", "fun", "nice"), ("bad", "awful", "dull", "poor", "boring")
NEUTRAL = ("a", "film", "and", "the", "plot", "was", "its", "cast")


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """The Hub unreachable, as the library reads it at each call."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def tokenizer_json():
    return train_bpe([DOCS, " ".join(POSITIVE + NEGATIVE + NEUTRAL)], 300).json


def saved(folder, model, tokenizer_json):
    """`model` written with save_pretrained into `folder`, with the tokenizer beside it."""
    torch.manual_seed(0)
    model.save_pretrained(folder)
    (folder / "tokenizer.json").write_text(tokenizer_json)
    return folder


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory, tokenizer_json):
    vocabulary = json.loads(tokenizer_json)["model"]["vocab"]
    config = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=16, n_positions=32, vocab_size=len(vocabulary),
                                     bos_token_id=0, eos_token_id=0)
    return saved(tmp_path_factory.mktemp("tiny-gpt2"), transformers.GPT2LMHeadModel(config), tokenizer_json)


@pytest.fixture(scope="module")
def bert(tmp_path_factory, tokenizer_json):
    config = transformers.BertConfig(num_hidden_layers=1, num_attention_heads=2, hidden_size=16, intermediate_size=32,
                                     vocab_size=len(json.loads(tokenizer_json)["model"]["vocab"]),
                                     max_position_embeddings=32)
    return saved(tmp_path_factory.mktemp("tiny-bert"), transformers.BertForMaskedLM(config), tokenizer_json)


def reviews(directory):
    """train.parquet (32 texts) and test.parquet (8), each a different few words, good or bad by
    its words of praise or blame, and new.txt to predict."""
    rng = random.Random(0)
    texts = set()
    while len(texts) < 40:
        good = len(texts) % 2 == 0
        words = rng.sample(POSITIVE if good else NEGATIVE, 2) + rng.sample(NEUTRAL, rng.randint(1, 4))
        rng.shuffle(words)
        texts.add((" ".join(words), "good" if good else "bad"))
    rows = sorted(texts)
    rng.shuffle(rows)
    for name, part in (("train", rows[:32]), ("test", rows[32:])):
        parquet.write_table(pa.table({"text": [text for text, _ in part], "label": [label for _, label in part]}),
                            directory / f"{name}.parquet")
    (directory / "new.txt").write_text("great good fun\n\nawful dull\n")
    return {"dataset": "hf", "path": "parquet", "data_files": {"train": "train.parquet", "test": "test.parquet"},
            "input": "text", "target": "label", "max_length": 8, "batch_size": 8}


def test_a_causal_lm_fine_tunes_from_its_folder_on_a_text_and_samples(tmp_path, gpt2, cli):
    """Its published weights start the run, the folder's tokenizer reads the text, the frozen
    blocks stay as loaded, the checkpoint keeps transformers' own names, and sample continues a
    prompt from the checkpoint alone."""
    (tmp_path / "docs.txt").write_text(DOCS)
    data = {"dataset": "text", "path": "docs.txt", "tokenizer": str(gpt2), "block_size": 16, "windows": 64}
    config = source_config(tmp_path, data, {"arch": f"hf/{gpt2}", "weights": "pretrained"},
                           train={"epochs": 1, "freeze": ["transformer.h.*"]})
    run = mltrain.fit(config).run_dir
    assert "model.weights: kept" in (run / "train.log").read_text()
    checkpoint = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    start = transformers.GPT2LMHeadModel.from_pretrained(gpt2).state_dict()
    assert "transformer.wte.weight" in checkpoint["backbone"]
    assert torch.equal(checkpoint["model"]["transformer.h.0.attn.c_attn.weight"],
                       start["transformer.h.0.attn.c_attn.weight"])
    assert not torch.equal(checkpoint["model"]["transformer.wte.weight"], start["transformer.wte.weight"])

    moved = gpt2.rename(gpt2.with_name("elsewhere"))  # the checkpoint holds its config.json and tokenizer
    try:
        result = cli("sample", run, "--prompt", "mltrain fit", "--tokens", "5", "--seed", "1")
    finally:
        moved.rename(gpt2)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("mltrain fit") and len(result.stdout.strip()) > len("mltrain fit")


def test_a_sequence_classifier_fine_tunes_on_a_text_column_evaluates_and_predicts(tmp_path, bert, cli):
    """A BERT saved as a masked language model becomes a classifier of the data's two classes:
    its encoder from the folder, its classifier new; texts padded to max_length and masked."""
    data = {**reviews(tmp_path), "input": ["text"], "tokenizer": str(bert)}  # the column alone in a list, as `text`
    config = source_config(tmp_path, data, {"arch": f"hf/{bert}", "weights": "pretrained"},
                           optimizer={"name": "adam", "lr": 0.01}, train={"epochs": 6})
    run = mltrain.fit(config).run_dir
    checkpoint = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert checkpoint["model"]["classifier.weight"].shape == (2, 16)
    assert "bert.embeddings.word_embeddings.weight" in checkpoint["backbone"]
    assert "classifier.weight" not in checkpoint["backbone"]

    evaluated = cli("eval", run)
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads((run / "eval-test.json").read_text())["metrics"]["test/accuracy"] >= 0.75

    rows = mltrain.predict(run, [tmp_path / "new.txt", tmp_path / "test.parquet"])
    assert [row["input"] for row in rows[:2]] == [f"{tmp_path / 'new.txt'}:1", f"{tmp_path / 'new.txt'}:3"]
    assert [row["classes"][0] for row in rows[:2]] == ["good", "bad"] and len(rows) == 10
    exported_without_its_folder(run, bert, cli)


def exported_without_its_folder(run, bert, cli):
    """The safetensors sidecar holds the model's config.json: the model rebuilds with its folder
    gone. An export that cannot rebuild it leaves neither file behind."""
    pytest.importorskip("safetensors")
    import mltrain.export

    moved = bert.rename(bert.with_name("elsewhere"))
    try:
        exported = cli("export", run, "--format", "safetensors")
        assert exported.exit_code == 0, exported.output
        assert "config.json" in json.loads((run / "export" / "best.json").read_text())["model_files"]
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(mltrain.export, "model_files", lambda model: None)  # a sidecar without it
            refused = cli("export", run, "--format", "safetensors", "--output", run.parent / "lost.safetensors")
    finally:
        moved.rename(bert)
    assert refused.exit_code == 2 and "no folder" in refused.stderr
    assert not list(run.parent.glob("lost.*"))


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_a_classifier_reads_padding_as_nothing(family, request):
    """The same text scores the same alone and padded: padding is masked out, and a decoder's
    classifier reads the last real token."""
    folder = request.getfixturevalue(family)
    model = ARCHITECTURES[f"hf/{folder}"].factory(input_shape=(8,), num_outputs=3,
                                                  task="sequence_classification").eval()
    text = torch.tensor([[5, 17, 42]])
    padded = torch.cat([text, torch.full((1, 5), PADDING)], dim=1)
    with torch.no_grad():
        for parameter in model.parameters():  # weights far from their small initialisation: padding read would show
            parameter.normal_()
        alone, filled = model(text), model(padded)
    assert isinstance(filled, torch.Tensor) and filled.shape == (1, 3)
    assert torch.allclose(alone, filled, atol=1e-5)


def test_a_model_that_is_not_there_or_not_installed_is_exit_2(tmp_path, gpt2, cli, monkeypatch):
    (tmp_path / "docs.txt").write_text(DOCS)
    data = {"dataset": "text", "path": "docs.txt", "tokenizer": str(gpt2), "block_size": 16, "windows": 16}
    no_folder = cli("fit", source_config(tmp_path, data, {"arch": f"hf/{tmp_path / 'nothing'}"}))
    assert no_folder.exit_code == 2 and f"model.arch: hf/{tmp_path / 'nothing'}: no folder" in no_folder.stderr
    not_cached = cli("fit", source_config(tmp_path, data, {"arch": "hf/no-such-org/no-such-model"}))
    assert not_cached.exit_code == 2 and "model.arch hf/no-such-org/no-such-model: cannot read" in not_cached.stderr
    assert "HF_HUB_OFFLINE" in not_cached.stderr

    config_only = tmp_path / "config-only"
    transformers.GPT2Config.from_pretrained(gpt2).save_pretrained(config_only)
    unweighted = cli("fit", source_config(tmp_path, data, {"arch": f"hf/{config_only}", "weights": "pretrained"}))
    assert unweighted.exit_code == 2 and "model.weights: pretrained" in unweighted.stderr

    import huggingface_hub.constants

    cached = tmp_path / "hub" / "models--fake--tiny"  # the cache holding a hub model's config.json alone
    transformers.GPT2Config.from_pretrained(gpt2).save_pretrained(cached / "snapshots" / "abc")
    (cached / "refs").mkdir()
    (cached / "refs" / "main").write_text("abc")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    uncached = cli("fit", source_config(tmp_path, data, {"arch": "hf/fake/tiny", "weights": "pretrained"}))
    assert uncached.exit_code == 2, uncached.output
    assert "hub model 'fake/tiny' has its config.json in the Hugging Face cache" in uncached.stderr
    assert "but not its weights" in uncached.stderr

    monkeypatch.setitem(__import__("sys").modules, "transformers", None)
    uninstalled = cli("fit", source_config(tmp_path, data, {"arch": f"hf/{gpt2}/."}))
    assert uninstalled.exit_code == 2 and 'pip install "mltrain[transformers]"' in uninstalled.stderr


def test_a_classifier_refuses_data_it_cannot_read(tmp_path, bert, cli):
    """A target per position (a language model's data), more positions than the model has, and
    more token ids than its embedding: each exit 2 before training, naming what to change."""
    (tmp_path / "docs.txt").write_text(DOCS)
    text = {"dataset": "text", "path": "docs.txt", "tokenizer": str(bert), "block_size": 16, "windows": 16}
    per_position = cli("fit", source_config(tmp_path, text, {"arch": f"hf/{bert}"}))
    assert per_position.exit_code == 2, per_position.output
    assert "sequence classifier" in per_position.stderr and "model.task: causal_lm" in per_position.stderr

    texts = reviews(tmp_path)
    too_long = cli("fit", source_config(tmp_path, {**texts, "tokenizer": str(bert), "max_length": 40},
                                        {"arch": f"hf/{bert}"}))
    assert too_long.exit_code == 2 and "data.max_length 40" in too_long.stderr and "at most 32" in too_long.stderr
    more_tokens = cli("fit", source_config(tmp_path, {**texts, "tokenizer": "bpe", "vocab_size": 400},
                                           {"arch": f"hf/{bert}"}))
    assert more_tokens.exit_code == 2, more_tokens.output
    assert "data.tokenizer" in more_tokens.stderr and "than the 300 of" in more_tokens.stderr


def test_list_the_reference_and_sample_help_describe_hf_models_as_they_are(cli, monkeypatch):
    """hf/<name> reads as a transformers model reading tokens, with its keys, and is not promised to
    `--search` (which searches torchvision and timm); `sample` takes any language model run."""
    monkeypatch.setenv("COLUMNS", "400")  # one line per table row
    listed = cli("list", "architectures").stdout.splitlines()
    (hf_row,) = [line for line in listed if line.strip().startswith("hf/<name>")]
    (torchvision_row,) = [line for line in listed if line.strip().startswith("torchvision/<name>")]
    assert "task=auto" in hf_row and "Hugging Face transformers model (mltrain[transformers])" in hf_row
    assert "--search" not in hf_row and "--search" in torchvision_row
    reference = (REPO / "docs" / "reference" / "components.md").read_text()
    (hf_line,) = [line for line in reference.splitlines() if line.startswith("| `hf/<name>`")]
    assert hf_line.endswith("Reads: tokens. |") and "--search" not in hf_line
    sample_help = " ".join(cli("sample", "--help").stdout.split())
    assert "any language model run (gpt, an hf/ causal language model" in sample_help


@pytest.mark.parametrize("guide", ["fine-tuning.md", "text-generation.md"])
def test_the_guides_name_the_model_folder_as_it_is_read(guide):
    """data.tokenizer is read from the config's folder, an hf/ folder from the working directory:
    the examples name one folder from beside the config, and the guide says the rule, hub names
    included."""
    import yaml

    text = (REPO / "docs" / "guides" / guide).read_text()
    blocks = [yaml.safe_load(block.split("```")[0]) for block in text.split("```yaml\n")[1:]]
    (example,) = [block for block in blocks if str(block.get("model", {}).get("arch", "")).startswith("hf/")]
    folder = example["model"]["arch"].removeprefix("hf/")
    assert Path(folder) == Path(example["data"]["tokenizer"])
    prose = " ".join(text.split())
    assert "relative to the config file; the folder after `hf/` is relative to the working directory" in prose
    assert "starts with `./`, `../`, `/` or `~` is always a folder" in prose and "otherwise a hub name" in prose
