"""The `mltrain` command line. Commands import torch only when they run, so --help is fast."""

from __future__ import annotations

import sys
import traceback

import typer

from .. import collector
from ..signals import StopRequested, stop_on_signals
from . import (
    check_cmd, compare_cmd, config_cmd, eval_cmd, export_cmd, fit_cmd, list_cmd, lr_find_cmd, predict_cmd,
    prepare_text_cmd, preflight_cmd, runs_cmd, sample_cmd, sweep_cmd,
)
from . import ending
from ..errors import ExitCode

app = typer.Typer(
    name="mltrain",
    help="Train PyTorch neural networks from YAML configs.\n\nExample: mltrain fit configs/quickstart.yaml",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"mltrain {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    pass


app.command("fit")(fit_cmd.fit)
app.command("eval")(eval_cmd.eval_)
app.command("predict")(predict_cmd.predict)
app.command("export")(export_cmd.export)
app.command("overfit-tiny")(check_cmd.overfit_tiny)
app.command("preflight")(preflight_cmd.preflight)
app.command("sample")(sample_cmd.sample)
app.command("prepare-text")(prepare_text_cmd.prepare_text)
app.command("lr-find")(lr_find_cmd.lr_find)
app.command("runs")(runs_cmd.runs)
app.command("compare")(compare_cmd.compare)
app.command("config")(config_cmd.config)
app.command("list")(list_cmd.list_)
app.command("sweep")(sweep_cmd.sweep)


def main() -> None:
    """Run the app and exit with its code. A process that held torch.distributed's threads (a
    worker of a distributed job, the `fit --nproc` launcher) ends with `exit_now`."""
    try:
        code = _run()
    except BaseException as error:
        if not ending.abrupt():
            raise
        code = _exit_code(error)
    if ending.abrupt():
        ending.exit_now(code)
    sys.exit(code)


def _exit_code(error: BaseException) -> int:
    """What the interpreter would make of an exception that ends the program, printed the same way."""
    if isinstance(error, SystemExit):
        if error.code is None or isinstance(error.code, int):
            return error.code or 0
        print(error.code, file=sys.stderr)
        return 1
    traceback.print_exc()
    return 1


def _run() -> int:
    """The app's exit code; a usage error (a bad flag or value) is one line on stderr and exit 2,
    like every other input error, instead of click's usage box."""
    try:
        from typer._click import exceptions as click_errors  # typer 0.29 and later carry their own click
    except ImportError:
        from click import exceptions as click_errors

    collector.defer_until_started()
    # before any command imports torch: a stop while it loads is exit 130, not SIGTERM's default 143
    with stop_on_signals(at_once=True):
        try:
            code = app(standalone_mode=False)
        except click_errors.NoArgsIsHelpError as error:
            print(error.ctx.get_help() if error.ctx else error.format_message())
            code = 0
        except click_errors.UsageError as error:
            command = error.ctx.command_path if error.ctx else "mltrain"
            print(f"error: {error.format_message()} (see `{command} --help`)", file=sys.stderr)
            code = ExitCode.BAD_INPUT
        except (typer.Abort, StopRequested):
            print("interrupted", file=sys.stderr)
            code = ExitCode.INTERRUPTED
    return int(code or 0)
