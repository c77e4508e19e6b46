"""Subword tokenizers: a text read through a BPE learned from it (cached beside it) or a given
tokenizer.json, `mltrain prepare-text` writing a token corpus, and `sample` from either."""

import json
import random

import numpy as np
import pytest

import mltrain
from conftest import REPO
from formats import source_config
from mltrain.errors import UserError
from mltrain.export import export
from mltrain.signals import StopRequested
from mltrain.restore import restore
from mltrain.sample import sample_text
from test_compile import StopAt
from test_streaming import assert_bitwise

pytest.importorskip("tokenizers")
GPT = {"arch": "gpt", "d_model": 32, "heads": 2, "layers": 1}
DOCS = (REPO / "configs" / "text" / "mltrain_docs.txt").read_text()


def test_a_text_trains_on_a_bpe_learned_from_it_and_samples_any_prompt(tmp_path):
    (tmp_path / "docs.txt").write_text(DOCS)
    data = {"dataset": "text", "path": "docs.txt", "block_size": 16, "windows": 128, "tokenizer": "bpe",
            "vocab_size": 300}
    config = source_config(tmp_path, data, GPT, train={"epochs": 1})
    run = mltrain.fit(config).run_dir
    (cached,) = tmp_path.glob("docs.txt.bpe300-*.json")
    assert json.loads(cached.read_text())["model"]["type"] == "BPE"
    state = restore(run).data_state
    assert state["tokenizer_json"] == cached.read_text() and "vocabulary" not in state

    trained = cached.read_text()
    cached.write_text(json.dumps(json.loads(trained), indent=1))  # the same tokenizer, written otherwise
    again = mltrain.fit(config).run_dir
    assert restore(again).data_state["tokenizer_json"] == cached.read_text() != trained  # read, not retrained

    text = sample_text(run, "Ünïcode and € are bytes too", tokens=8, seed=1)
    assert text.startswith("Ünïcode and € are bytes too") and text == sample_text(
        run, "Ünïcode and € are bytes too", tokens=8, seed=1)

    with pytest.raises(UserError, match="at least its 256 byte tokens"):
        mltrain.fit(config, overrides=["data.vocab_size=100"])

    # Stopped at step 3 and resumed: bitwise the run that was not stopped; and it exports.
    logged = ["train.log_every_steps=1", "train.epochs=2"]
    whole = mltrain.fit(config, overrides=logged, quiet=True).run_dir
    with pytest.raises(StopRequested):
        mltrain.fit(config, overrides=[*logged, "name=stopped"], quiet=True, sinks=[StopAt(3)])
    stopped = mltrain.resume(next(tmp_path.glob("runs/stopped-*")), quiet=True).run_dir
    assert_bitwise(whole, stopped)
    assert export(stopped, "safetensors").path.is_file()


def test_prepare_text_writes_a_token_corpus_that_trains_and_samples(tmp_path, cli):
    rng = random.Random(0)
    words = DOCS.split()
    (tmp_path / "books").mkdir()
    for number in range(3):
        lines = (" ".join(rng.choice(words) for _ in range(12)) for _ in range(800))
        (tmp_path / "books" / f"{number}.txt").write_text("\n".join(lines))
    result = cli("prepare-text", tmp_path / "books", "--vocab-size", "400", "--out", tmp_path / "corpus")
    assert result.exit_code == 0, result.output
    assert "tokens/s" in result.stdout
    train = np.fromfile(tmp_path / "corpus" / "train.bin", dtype=np.uint16)
    val = np.fromfile(tmp_path / "corpus" / "val.bin", dtype=np.uint16)
    assert 0.03 < len(val) / (len(train) + len(val)) < 0.07 and train.max() < 400
    assert f"{len(train):,} train and {len(val):,} val tokens" in result.stdout

    config = source_config(tmp_path, {"dataset": "tokens", "path": "corpus", "block_size": 16, "windows": 128},
                           GPT, train={"epochs": 1})
    run = mltrain.fit(config).run_dir
    assert sample_text(run, "mltrain fit", tokens=5).startswith("mltrain fit")

    # A given tokenizer.json (relative to the config file) reads a text the same way.
    tokenized = source_config(tmp_path, {"dataset": "text", "path": str(tmp_path / "books" / "0.txt"),
                                         "block_size": 16, "windows": 64, "tokenizer": "corpus/tokenizer.json"},
                              GPT, train={"epochs": 1})
    assert restore(mltrain.fit(tokenized).run_dir).spec.num_classes == 400

    refused = cli("prepare-text", tmp_path / "books", "--tokenizer", "char", "--out", tmp_path / "chars")
    assert refused.exit_code == 2 and "data.dataset: text" in refused.stderr
    missing = cli("prepare-text", tmp_path / "nothing", "--out", tmp_path / "x")
    assert missing.exit_code == 2 and "no such file or folder" in missing.stderr
