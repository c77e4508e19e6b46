from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import typer

from .. import collector
from . import ending
from .errors import exit_codes
from .options import SET, TRUST_CODE

if TYPE_CHECKING:
    from ..config import Config


def fit(
    config: Optional[Path] = typer.Argument(None, help="YAML config file.", show_default=False),
    set_: list[str] = SET,
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="Write the run here instead of "
                                           "<output.dir>/<name>-<time>/."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:N or mps; "
                                         "overrides train.device."),
    nproc: str = typer.Option("1", "--nproc", metavar="N|auto", help="Processes to train with on this machine (DDP "
                              "through torch's elastic launcher; one per GPU on CUDA); auto: one per visible GPU, or "
                              "1 without a GPU. Under torchrun, leave it out."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the final line."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue a run from its directory "
                                          "or a checkpoint."),
    trust_code: bool = TRUST_CODE,
    force: bool = typer.Option(False, "--force", help="With --nproc: start more processes than the usable CPU "
                               "cores (or, on CUDA, the visible GPUs)."),
) -> None:
    """Train a model as CONFIG says and write a run directory (or continue one with --resume).

    Example: mltrain fit configs/quickstart.yaml --set optimizer.lr=0.01
    (continue one: mltrain fit --resume runs/quickstart-20260101-120000)
    """
    with exit_codes(trust_code):
        from ..errors import UserError

        if ending.is_distributed_worker():
            from ..distributed import end_with_launcher

            end_with_launcher()  # a launcher killed with kill -9 leaves no worker training on
            if nproc != "1":
                raise UserError("--nproc under torchrun: torchrun already started the processes; leave --nproc out")
        cfg = None
        if nproc != "1":
            from ..config import load_config

            # a bad config is one message here, not one per worker
            cfg = load_config(config, set_) if config is not None else None
        device_name = functools.cache(lambda: _device_name(device, cfg, resume, set_))  # read once, if at all
        processes = _process_count(nproc, device_name)
        if processes > 1:
            from ..distributed import launch_local

            _check_processes(processes, device_name(), force)
            ending.launching_workers()
            collector.resume()  # it waits on the workers for the whole run
            raise typer.Exit(launch_local(processes, _worker_arguments(config, set_, run_dir, device, quiet, resume,
                                                                         trust_code)))
        if resume is not None:
            if config is not None or run_dir is not None:
                raise UserError("--resume continues a run with its own config and directory: "
                                "give neither CONFIG nor --run-dir (use --set to extend, e.g. --set train.epochs=20)")
            from ..fitting import resume as resume_run

            resume_run(resume, set_, device=device, quiet=quiet)
            return
        if config is None:
            raise UserError("missing CONFIG: give a YAML config file, e.g. mltrain fit configs/quickstart.yaml")
        from ..config import load_config
        from ..fitting import fit as run_fit

        run_fit(load_config(config, set_), run_dir=run_dir, device=device, quiet=quiet)


def _device_name(device: str | None, cfg: Config | None, resume: Path | None, set_: list[str]) -> str:
    """The device the workers will ask for: --device, else train.device of the config (of a resumed
    run, its config.yaml with --set), else auto when that cannot be read here."""
    from ..config import load_config
    from ..errors import UserError
    from ..registry import from_stored

    if device is not None:
        return device
    if cfg is not None:
        return cfg.train.device
    run = resume if resume is None or resume.is_dir() else resume.parent.parent  # <run>/checkpoints/x.pt
    if run is not None and (run / "config.yaml").is_file():
        with from_stored(), contextlib.suppress(UserError):  # the workers say what is wrong with it
            return load_config(run / "config.yaml", set_).train.device
    return "auto"


def _process_count(nproc: str, device_name: Callable[[], str]) -> int:
    """--nproc as a number of processes: N, or auto (one per visible GPU when the run is on CUDA,
    else 1)."""
    from ..errors import UserError

    if nproc == "auto":
        from ..devices import pick_device

        if pick_device(device_name()).type != "cuda":
            return 1
        import torch

        return max(1, torch.cuda.device_count())
    if not (nproc.isascii() and nproc.isdigit()) or int(nproc) < 1:
        raise UserError(f"--nproc {nproc}: give a whole number of processes (at least 1), or auto")
    return int(nproc)


def _check_processes(nproc: int, device_name: str, force: bool) -> None:
    """Refuse more processes than the device has room for, before any starts: on CUDA, more
    than the GPUs (each process trains on its own); on the CPU, more than the usable cores
    unless forced (each holds its own model, data and threads, so 64 on 2 cores fill the memory
    and train no faster)."""
    from ..devices import pick_device, usable_cores
    from ..errors import UserError

    if pick_device(device_name).type == "cuda":
        import torch

        visible = torch.cuda.device_count()
        if nproc > visible:  # not even with --force: each process trains on a GPU of its own
            raise UserError(f"--nproc {nproc}: more processes than the {visible} visible CUDA GPU(s); each process "
                            f"needs its own: use --nproc {visible} (or --nproc auto), or --device cpu")
        return
    if nproc > usable_cores() and not force:
        raise UserError(f"--nproc {nproc}: more processes than the {usable_cores()} usable CPU cores; use --nproc "
                        f"{usable_cores()} or fewer, or add --force to start them anyway")


def _worker_arguments(config: Path | None, set_: list[str], run_dir: Path | None, device: str | None,
                      quiet: bool, resume: Path | None, trust_code: bool) -> list[str]:
    """The `mltrain fit` command line each worker runs: this one, less --nproc."""
    arguments = ["fit"] + ([str(config)] if config is not None else [])
    arguments += [item for value in set_ for item in ("--set", value)]
    for flag, value in (("--run-dir", run_dir), ("--device", device), ("--resume", resume)):
        if value is not None:
            arguments += [flag, str(value)]
    return arguments + (["--quiet"] if quiet else []) + (["--trust-code"] if trust_code else [])
