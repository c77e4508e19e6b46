"""Data bigger than memory: WebDataset tar shards, Parquet row groups, token corpora and Hugging
Face streams. Each stream continues exactly from its state and shares its batches between two
processes; two processes training on shards resume bitwise after one of them is killed."""

import itertools

import pytest
import torch

from formats import source_config, write_shards, write_token_corpus
from test_distributed import fit, kill_a_worker_at_step

SHARDS = {"dataset": "webdataset", "image_size": 8, "shuffle_buffer": 64, "workers": 2}
CNN = {"arch": "cnn", "channels": [8], "dropout": 0.1}
TOKENS = {"dataset": "tokens", "block_size": 16, "windows": 256}
TRAIN = {"epochs": 2, "log_every_steps": 1, "checkpoint_every_steps": 3, "threads": 1}


def last_weights(run):
    return torch.load(run / "checkpoints/last.pt", weights_only=True)["model"]


def killed_and_resumed(config, run, step):
    """A run of --nproc 2 whose second process is killed (kill -9) at `step`, which ends the job
    within seconds with a line per process and no traceback; then resumed."""
    returncode, stderr, seconds = kill_a_worker_at_step(config, run, step)
    assert returncode != 0 and seconds < 30
    assert "killed or crashed" in stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) <= 3, stderr
    resumed = fit("--resume", run, "--nproc", "2")
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
    assert streamed.state == {**whole.state, "first_samples": whole.size("train")}
    assert set(streamed.splits) == set(whole.splits) == {"train", "val", "test"}
    for split, (x, y) in whole.splits.items():  # the same rows, in storage order when streamed
        streamed_x, streamed_y = streamed.splits[split]
        rows = sorted(zip(map(tuple, x.tolist()), y.tolist()))
        assert sorted(zip(map(tuple, streamed_x[:].tolist()), streamed_y.tolist())) == rows
    streamed.close()


def source_data(tmp_path, source):
    if source == "webdataset":
        return {**SHARDS, "train": write_shards(tmp_path / "shards", shards=8, per_shard=40)}
    if source == "parquet":
        return write_row_groups(tmp_path / "customers.parquet")
    write_token_corpus(tmp_path / "corpus")
    return {**TOKENS, "path": str(tmp_path / "corpus")}


def batches(data, epoch_batches, world_size=1, rank=0, state=None):
    """The training batches of a freshly built stream (from `state` when given): the first
    `epoch_batches[e]` of each epoch e + 1 (None: all); and the stream's state after them."""
    from mltrain.config import section_config
    from mltrain.data import build_data

    built = build_data(section_config("data", **data), 0, torch.device("cpu"))
    stream = built.training_stream(16 // world_size, 0)
    if state is not None:
        stream.load_state_dict(state)
    taken = []
    for epoch, count in enumerate(epoch_batches, start=1):
        taken += [(x, y) for x, y, _ in itertools.islice(stream.batches(epoch, rank, world_size), count)]
    state = stream.state_dict()
    stream.close()
    built.close()
    return taken, state


@pytest.mark.parametrize("source", ["webdataset", "parquet", "tokens"])
def test_a_stream_restored_from_its_state_continues_exactly_and_two_processes_share_its_batches(tmp_path, source):
    data = source_data(tmp_path, source)
    whole, _ = batches(data, [None, None])
    first, state = batches(data, [5])
    rest, _ = batches(data, [None, None], state=state)
    assert len(first) == 5 and len(first) + len(rest) == len(whole)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first + rest, whole))
    assert not torch.equal(whole[0][0], whole[len(whole) // 2][0])  # epoch 2 is another order

    halves = [batches(data, [None], world_size=2, rank=rank)[0] for rank in (0, 1)]
    assert len(halves[0]) == len(halves[1]) == len(whole) // 2
    for (x0, y0), (x1, y1), (x, y) in zip(*halves, whole):
        assert torch.equal(torch.cat([x0, x1]), x) and torch.equal(torch.cat([y0, y1]), y)


@pytest.mark.cpu_only(reason="two processes on one machine: gloo on the CPU; on CUDA each needs a GPU of its own")
def test_two_processes_stream_shards_and_resume_bitwise_after_a_worker_is_killed(tmp_path):
    # Decoded in the training processes: DataLoader workers are covered by the stream tests above.
    data = {**SHARDS, "train": write_shards(tmp_path / "shards", shards=8, per_shard=40), "workers": 0}
    config = source_config(tmp_path, data, CNN, train=TRAIN)
    whole = fit(config, "--nproc", "2", "--run-dir", tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr
    assert "(streamed from disk)" in whole.stdout
    run = killed_and_resumed(config, tmp_path / "killed", 5)  # 9 steps an epoch: mid-epoch
    assert_bitwise(tmp_path / "whole", run)


def test_a_hugging_face_stream_trains_for_max_steps_resumes_with_a_note_and_refuses_what_it_cannot_do(tmp_path):
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

    extended = mltrain.resume(result.run_dir, overrides=["train.max_steps=32"])
    assert extended.summary["final"]["step"] == 32
    assert "does not save its shuffle buffer" in (result.run_dir / "train.log").read_text()
    with pytest.raises(UserError, match="--split train: dataset 'hf' streams its training split"):
        mltrain.evaluate(result.run_dir, split="train")


def test_a_streamed_regression_target_still_streams(tmp_path):
    from mltrain.config import section_config
    from mltrain.data import TARGET_SCALE, build_data

    datasets = pytest.importorskip("datasets")
    values = torch.linspace(0, 1, 64).tolist()
    datasets.Dataset.from_dict({"a": values, "y": [2 * v for v in values]}).save_to_disk(str(tmp_path / "saved"))
    data = build_data(section_config("data", dataset="hf", path=str(tmp_path / "saved"), input=["a"], target="y",
                                     task="regression", streaming=True, val_split=0), 0, torch.device("cpu"))
    assert data.streamed_train is not None and data.size("train") is None
    assert data.state[TARGET_SCALE]["mean"] == pytest.approx([1.0], abs=1e-6)


def test_a_token_corpus_run_is_scored_per_token_id(tmp_path):
    import mltrain

    write_token_corpus(tmp_path / "corpus", tokens=4_000, val=600)
    data = {**TOKENS, "path": str(tmp_path / "corpus"), "windows": 64}
    run = mltrain.fit(source_config(tmp_path, data, {"arch": "gpt", "d_model": 16, "heads": 2, "layers": 1},
                                    train={"epochs": 1})).run_dir
    report = mltrain.evaluate(run)  # no test split: val
    assert report["split"] == "val" and report["class_names"] == [str(token) for token in range(40)]
    assert len(report["per_class"]["support"]) == 40
