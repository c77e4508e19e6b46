import pytest

from mltrain.config import Config, config_from_dict, config_to_dict, dump_config, load_config, section_config
from mltrain.errors import ConfigError, UserError


def write(tmp_path, text, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(path, overrides=()):
    with pytest.raises(UserError) as caught:
        load_config(path, overrides)
    return str(caught.value)


def test_defaults_are_filled_and_name_is_the_file_stem(tmp_path):
    cfg = load_config(write(tmp_path, "data: {dataset: digits}\n", name="my_run.yaml"))
    assert cfg.name == "my_run"
    assert cfg.model == Config().model and cfg.model.activation == "relu"
    assert cfg.train.monitor == "val/loss"  # `auto` resolved: the validation loss


def test_scientific_notation_is_a_float(tmp_path):
    cfg = load_config(write(tmp_path, "optimizer:\n  lr: 3e-4\n  weight_decay: 1E-2\n"))
    assert cfg.optimizer.lr == pytest.approx(3e-4)
    assert cfg.optimizer.weight_decay == pytest.approx(0.01)


def test_set_overrides_take_yaml_values(tmp_path):
    cfg = load_config(write(tmp_path, "seed: 1\n"), ["model.hidden=[256,128]", "optimizer.lr=0.01",
                                                      "train.early_stopping={patience: 2}"])
    assert cfg.model.hidden == (256, 128)
    assert cfg.optimizer.lr == 0.01
    assert cfg.train.early_stopping.patience == 2
    assert cfg.train.early_stopping.min_delta == 0.0


def test_unknown_key_names_file_line_and_suggests(tmp_path):
    path = write(tmp_path, "seed: 0\nmodel:\n  arch: mlp\n  hiden: [64]\n")
    message = error_of(path)
    assert f"{path}:4" in message
    assert "model.hiden" in message and "did you mean 'hidden'" in message


def test_unknown_top_level_section(tmp_path):
    message = error_of(write(tmp_path, "optimiser:\n  lr: 0.1\n"))
    assert "did you mean 'optimizer'" in message and ":1" in message


def test_wrong_type_names_line_and_expected_type(tmp_path):
    path = write(tmp_path, "data:\n  batch_size: lots\n")
    message = error_of(path)
    assert f"{path}:2" in message and "data.batch_size" in message and "expected an integer" in message


def test_invalid_yaml_reports_its_line(tmp_path):
    path = write(tmp_path, "model:\n  arch: mlp\n hidden: [1\n")
    message = error_of(path)
    assert "invalid YAML" in message and f"{path}:" in message


def test_duplicate_keys_are_refused(tmp_path):
    message = error_of(write(tmp_path, "seed: 1\nseed: 2\n"))
    assert "written twice" in message and ":2" in message


def test_unknown_names_suggest_the_closest(tmp_path):
    path = write(tmp_path, "model:\n  activation: rellu\n")
    message = error_of(path)
    assert "did you mean 'relu'" in message and f"{path}:2" in message
    assert "did you mean 'adam'" in error_of(path, ["optimizer.name=adma", "model.activation=relu"])


def test_component_keys_belong_to_their_component(tmp_path):
    message = error_of(write(tmp_path, "optimizer:\n  name: adam\n  momentum: 0.9\n"))
    assert "optimizer 'adam' does not take this key" in message and "optimizer.momentum" in message


def test_out_of_range_values(tmp_path):
    path = write(tmp_path, "seed: 0\n")
    assert "must be above 0" in error_of(path, ["optimizer.lr=0"])
    assert "below 1" in error_of(path, ["data.val_split=1.5"])
    assert "at least 1" in error_of(path, ["train.epochs=0"])


def test_impossible_pairings_say_what_fits(tmp_path):
    path = write(tmp_path, "data: {dataset: digits}\n")
    message = error_of(path, ["model.head=linear"])
    assert "head 'linear' does regression" in message and "softmax" in message
    message = error_of(path, ["train.monitor=val/r2"])
    assert "val/accuracy" in message


def test_set_errors_point_at_the_set(tmp_path):
    message = error_of(write(tmp_path, "seed: 0\n"), ["train.epochz=3"])
    assert message.startswith("--set train.epochz=3") and "did you mean 'epochs'" in message
    assert "KEY=VALUE" in error_of(write(tmp_path, "seed: 0\n"), ["train.epochs"])
    message = error_of(write(tmp_path, "seed: 0\n"), ["optimiser.lr=0.1"])  # a section the file lacks
    assert message.startswith("--set optimiser.lr=0.1: optimiser") and "did you mean 'optimizer'" in message


def test_missing_file(tmp_path):
    assert "config file not found" in error_of(tmp_path / "nope.yaml")


def test_a_config_must_be_a_mapping(tmp_path):
    assert "mapping" in error_of(write(tmp_path, "- 1\n- 2\n"))


def test_dump_round_trips(tmp_path):
    cfg = load_config(write(tmp_path, "data: {dataset: spirals, classes: 4}\nscheduler: {name: cosine}\n"))
    dumped = write(tmp_path, dump_config(cfg), name="again.yaml")
    assert load_config(dumped) == cfg
    assert config_from_dict(config_to_dict(cfg)) == cfg


def test_dump_shows_only_keys_that_apply(tmp_path):
    text = dump_config(load_config(write(tmp_path, "optimizer: {name: sgd}\n")))
    assert "momentum" in text and "betas" not in text
    assert "points" not in dump_config(load_config(write(tmp_path, "data: {dataset: digits}\n")))


def test_every_problem_of_a_file_is_reported_at_once_in_file_order(tmp_path):
    path = write(tmp_path, "model:\n  arch: mlp\n  hiden: [64]\noptimizer:\n  learning_rate: 0.1\n"
                           "train:\n  epochs: 0\n  early_stopping: {patiance: 3}\n")
    message = error_of(path)
    lines = message.splitlines()
    assert lines[0] == f"{path}: 4 problems:"
    assert [line.split(": ")[0].strip() for line in lines[1:]] == [f"{path}:3", f"{path}:5", f"{path}:7", f"{path}:8"]
    assert "did you mean 'hidden'" in lines[1] and "did you mean 'lr'" in lines[2]
    assert "0 must be at least 1" in lines[3] and "did you mean 'patience'" in lines[4]


def test_component_keys_come_from_the_named_components_schema(tmp_path):
    cfg = load_config(write(tmp_path, "model: {arch: transformer, heads: 2, d_model: 32}\n"
                                      "scheduler: {name: plateau}\n"))
    assert type(cfg.model).__name__ == "TransformerConfig" and cfg.model.activation == "gelu"
    assert cfg.scheduler.patience == 2 and not hasattr(cfg.model, "hidden")
    message = error_of(write(tmp_path, "model: {arch: transformer, heads: 3, d_model: 32}\n"))
    assert "model.heads: 3 heads do not divide model.d_model 32" in message
    with pytest.raises(ConfigError):
        section_config("optimizer", name="sgd", betas=[0.9, 0.99])


def test_paths_in_the_file_resolve_from_its_directory_and_set_paths_from_the_working_directory(tmp_path,
                                                                                               monkeypatch):
    (tmp_path / "configs").mkdir()
    path = write(tmp_path / "configs", "data: {dataset: npz, path: table.npz}\nmodel: {head: softmax}\n")
    monkeypatch.chdir(tmp_path)
    assert load_config(path).data.path == str(tmp_path / "configs" / "table.npz")
    assert load_config(path, ["data.path=table.npz"]).data.path == str(tmp_path / "table.npz")
