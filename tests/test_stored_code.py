"""A file someone hands you runs no code: the config stored in a checkpoint, a run directory or a
sweep study may name only built-ins and installed plugins, unless the user passes --trust-code."""

import subprocess

import pytest
import torch
import yaml

import mltrain
from conftest import MLTRAIN
from helpers import write_config, write_package

PLANTED = '''
import pathlib

pathlib.Path({marker!r}).write_text("ran")


def run(*args, **keys):
    pathlib.Path({marker!r}).write_text("called")
'''


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    directory = tmp_path_factory.mktemp("trained")
    return mltrain.fit(write_config(directory, train={"epochs": 1}), quiet=True).run_dir


@pytest.fixture
def planted(tmp_path, monkeypatch, request):
    """A module that leaves a marker file when imported or called, importable in this process."""
    marker, package = tmp_path / "marker", f"planted_{request.node.name.split('[')[-1].strip(']').replace('-', '_').replace('.', '_')}"
    site = write_package(tmp_path / "site", package, {"code": PLANTED.format(marker=str(marker))})
    monkeypatch.syspath_prepend(str(site))
    return f"{package}.code:run", marker


def edit_checkpoints(run, change):
    for checkpoint in (run / "checkpoints").glob("*.pt"):
        state = torch.load(checkpoint, weights_only=True)
        change(state)
        torch.save(state, checkpoint)


def copy_run(run, destination):
    subprocess.run(["cp", "-r", str(run), str(destination)], check=True)
    return destination


@pytest.mark.parametrize("key", ["data.dataset", "model.arch"])
def test_an_import_path_stored_in_a_checkpoint_is_refused_by_every_command(cli, trained, planted, tmp_path, key):
    path, marker = planted
    run = copy_run(trained, tmp_path / "run")
    section, name = key.split(".")
    edit_checkpoints(run, lambda state: state["config"][section].update({name: path}))
    for command in (["eval", run], ["export", run, "--format", "pt2"], ["sample", run, "--prompt", "a", "--tokens", "1"],
                    ["fit", "--resume", run]):
        result = cli(*command)
        assert result.exit_code == 2, (command, result.output)
        assert f"{key}: the stored" in result.output and path in result.output and "--trust-code" in result.output
        assert not marker.exists(), command  # the module was never imported
    cli("eval", run, "--trust-code")  # the user vouches for the file: the path is imported as asked
    assert marker.exists()


def test_a_run_directory_config_is_checked_the_same_way(cli, trained, planted, tmp_path):
    path, marker = planted
    run = copy_run(trained, tmp_path / "run")
    for checkpoint in (run / "checkpoints").glob("*.pt"):
        checkpoint.unlink()  # stopped before its first checkpoint: resume starts again from config.yaml
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["data"] = {"dataset": path}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    result = cli("fit", "--resume", run)
    assert result.exit_code == 2 and "--trust-code" in result.output and not marker.exists()


def test_a_stored_data_state_is_checked_against_its_dataset(cli, trained, tmp_path):
    run = copy_run(trained, tmp_path / "run")
    edit_checkpoints(run, lambda state: state.update(data_state={"args": ["touch", "x"], "shell": True}))
    result = cli("eval", run)
    assert result.exit_code == 2
    assert "the dataset spirals keeps no state named args, shell" in result.output


def sweep_definition(sweep_dir, change):
    """Edit the definition stored in the sweep's study, as anyone who can write to its storage can."""
    from optuna.storages import RDBStorage

    from mltrain.sweep.study import _DEFINITION

    storage = RDBStorage(f"sqlite:///{sweep_dir / 'study.db'}")
    study_id = storage.get_study_id_from_name(sweep_dir.name)
    definition = storage.get_study_user_attrs(study_id)[_DEFINITION]
    change(definition)
    storage.set_study_user_attr(study_id, _DEFINITION, definition)


def test_a_sweep_study_runs_no_stored_code_and_refuses_an_edited_definition(cli, planted, tmp_path):
    path, marker = planted
    sweep_dir = tmp_path / "sweep"
    started = cli("sweep", write_config(tmp_path, train={"epochs": 1}), "--search", "optimizer.lr=choice(0.01)",
                  "--sampler", "grid", "--sweep-dir", sweep_dir)
    assert started.exit_code == 0, started.output

    def plant(definition):
        config = yaml.safe_load(definition["base_config"])
        config["model"] = {"arch": path}
        definition["base_config"] = yaml.safe_dump(config)
        definition["trials"] = 2  # one more to run, which --resume would start

    sweep_definition(sweep_dir, plant)
    for command in (["sweep", "--resume", sweep_dir], ["sweep", "--join", sweep_dir]):
        result = cli(*command)
        assert result.exit_code == 2 and "model.arch: the stored" in result.output, result.output
        assert not marker.exists()
    sweep_definition(sweep_dir, lambda definition: definition.update(extra="x"))
    result = cli("sweep", "--resume", sweep_dir)
    assert result.exit_code == 2 and "extra" in result.output and "sweep definition is damaged" in result.output


@pytest.mark.cpu_only(reason="two processes on one machine: gloo on the CPU; on CUDA each needs a GPU of its own")
def test_workers_do_not_import_from_the_working_directory(tmp_path):
    """`python -m` would put the working directory first on the import path: a yaml.py there ran in
    every --nproc worker."""
    marker = tmp_path / "marker"
    (tmp_path / "yaml.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n")
    config = write_config(tmp_path, train={"epochs": 1})
    result = subprocess.run([MLTRAIN, "fit", str(config), "--nproc", "2", "--quiet", "--run-dir", str(tmp_path / "run")],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert not marker.exists()
