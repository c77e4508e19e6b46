"""Data bigger than memory: WebDataset tar shards, Parquet row groups and token corpora, streamed
with 1 and 2 processes, and resumed bitwise after kill -9 mid-epoch."""

import os
import signal
import subprocess

import pytest
import torch

from conftest import MLTRAIN
from formats import source_config, write_shards, write_token_corpus
from test_distributed import fit, stop_job, worker_pids
from test_resume import wait_for_step

SHARDS = {"dataset": "webdataset", "image_size": 8, "shuffle_buffer": 64, "workers": 2}
CNN = {"arch": "cnn", "channels": [8], "dropout": 0.1}
TOKENS = {"dataset": "tokens", "path": "corpus", "block_size": 16, "windows": 256}
GPT = {"arch": "gpt", "d_model": 32, "heads": 2, "layers": 1, "dropout": 0.1}
TRAIN = {"epochs": 2, "log_every_steps": 1, "checkpoint_every_steps": 3, "threads": 1}


def last_weights(run):
    return torch.load(run / "checkpoints/last.pt", weights_only=True)["model"]


def killed_and_resumed(config, run, step, *launch):
    """A run killed (kill -9 of its process, or of one worker of --nproc 2) at `step`, then resumed."""
    process = subprocess.Popen([MLTRAIN, "fit", str(config), "--run-dir", str(run), *launch],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_step(run, step, process)
        if launch:  # --nproc 2: one worker dies, the launcher ends the job
            os.kill(worker_pids(process.pid)[-1], signal.SIGKILL)
        else:
            process.kill()
        process.wait(timeout=60)
    finally:
        stop_job(process)
    resumed = fit("--resume", run, *launch)
    assert resumed.returncode == 0, resumed.stderr
    return run


def assert_bitwise(a, b):
    wa, wb = last_weights(a), last_weights(b)
    assert set(wa) == set(wb) and all(torch.equal(wa[key], wb[key]) for key in wa)
    assert (a / "metrics.jsonl").read_text() == (b / "metrics.jsonl").read_text()


def write_row_groups(path, rows=300, group=40):
    """The customers table of test_tables as Parquet row groups of `group` rows."""
    from test_tables import COLUMNS, customers, pa, parquet

    table = customers(rows)
    parquet.write_table(pa.table({name: [row[name] for row in table] for name in COLUMNS}), path, row_group_size=group)
    return {"dataset": "parquet", "path": str(path), "target": "churn", "id_column": "customer_id",
            "missing": "fill", "streaming": True, "shuffle_buffer": 64, "workers": 2}


def test_a_streamed_table_has_the_split_and_encoding_of_the_table_in_memory(tmp_path):
    from mltrain.config import section_config
    from mltrain.data import build_data
    from mltrain.data.streamed import StreamedSamples

    data = write_row_groups(tmp_path / "customers.parquet")
    streamed, whole = (build_data(section_config("data", **{**data, "streaming": streaming}), 0, torch.device("cpu"))
                       for streaming in (True, False))
    assert isinstance(streamed.splits["train"][0], StreamedSamples)
    assert streamed.state == {**whole.state, "fitted_rows": whole.size("train")}
    assert set(streamed.splits) == set(whole.splits) == {"train", "val", "test"}
    for split, (x, y) in whole.splits.items():  # the same rows, in storage order when streamed
        streamed_x, streamed_y = streamed.splits[split]
        rows = sorted(zip(map(tuple, x.tolist()), y.tolist()))
        assert sorted(zip(map(tuple, streamed_x[:].tolist()), streamed_y.tolist())) == rows
    streamed.close()


@pytest.mark.parametrize("source", ["webdataset", "parquet", "tokens"])
def test_a_streamed_source_resumes_bitwise_after_kill_9_mid_epoch(tmp_path, source):
    if source == "webdataset":
        data, model = {**SHARDS, "train": write_shards(tmp_path / "shards", shards=8, per_shard=40)}, CNN
    elif source == "parquet":
        data, model = write_row_groups(tmp_path / "customers.parquet", rows=600), {"arch": "mlp", "dropout": 0.1}
    else:
        write_token_corpus(tmp_path / "corpus")
        data, model = TOKENS, GPT
    config = source_config(tmp_path, data, model, train=TRAIN)
    whole = fit(config, "--run-dir", tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr
    assert "(streamed from disk)" in whole.stdout
    run = killed_and_resumed(config, tmp_path / "killed", 11)  # epoch 1 has 16 or 18 steps: mid-epoch
    assert_bitwise(tmp_path / "whole", run)


def test_two_processes_stream_shards_and_resume_bitwise_after_a_worker_is_killed(tmp_path):
    data = {**SHARDS, "train": write_shards(tmp_path / "shards", shards=8, per_shard=40), "workers": 1}
    config = source_config(tmp_path, data, CNN, train=TRAIN)
    whole = fit(config, "--nproc", "2", "--run-dir", tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr
    run = killed_and_resumed(config, tmp_path / "killed", 5, "--nproc", "2")  # 9 steps an epoch
    assert_bitwise(tmp_path / "whole", run)


def test_two_processes_with_batch_b_draw_the_token_windows_of_one_with_batch_2b(tmp_path):
    write_token_corpus(tmp_path / "corpus")
    runs = {}
    for processes, batch in ((2, 8), (1, 16)):
        # SGD: Adam would magnify the processes' different summation order in near-zero gradients.
        config = source_config(tmp_path, {**TOKENS, "batch_size": batch}, {**GPT, "dropout": 0.0},
                               optimizer={"name": "sgd", "lr": 0.1}, train={"epochs": 1, "threads": 1})
        result = fit(config, "--nproc", processes, "--run-dir", tmp_path / f"{processes}")
        assert result.returncode == 0, result.stderr
        runs[processes] = last_weights(tmp_path / f"{processes}")
    assert all(torch.allclose(runs[1][key], runs[2][key], atol=1e-5) for key in runs[1])


def test_a_hugging_face_stream_trains_for_max_steps_resumes_with_a_note_and_refuses_what_it_cannot_do(tmp_path,
                                                                                                          capsys):
    import mltrain
    from mltrain.errors import UserError
    from test_hf import saved_source

    data, _ = saved_source(tmp_path)  # a save_to_disk folder with train and test splits, no validation
    streamed = {"dataset": "hf", "batch_size": 16, "streaming": True, "shuffle_buffer": 32, **data}
    config = source_config(tmp_path, streamed, {"arch": "mlp", "hidden": [16]},
                           train={"max_steps": 24, "checkpoint_every_steps": 8})
    with pytest.raises(UserError, match="own validation split"):
        mltrain.fit(config)
    with pytest.raises(UserError, match="train.max_steps"):
        mltrain.fit(config, overrides=["data.val_split=0", "train.max_steps=null"])

    result = mltrain.fit(config, overrides=["data.val_split=0"])
    assert result.summary["status"] == "completed" and result.summary["final"]["step"] == 24
    log = (result.run_dir / "train.log").read_text()
    assert "train a stream" in log and "length unknown" in log
    stream = torch.load(result.run_dir / "checkpoints/last.pt", weights_only=True)["per_process"][0]["stream"]
    assert stream["passes"] >= 2 and stream["library"]  # 120 examples: 24 steps of 16 go round them 3 times
    assert mltrain.evaluate(result.run_dir)["split"] == "test"

    capsys.readouterr()
    extended = mltrain.resume(result.run_dir, overrides=["train.max_steps=32"])
    assert extended.summary["final"]["step"] == 32
    assert "does not save its shuffle buffer" in capsys.readouterr().out
