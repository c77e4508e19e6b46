"""The optional loggers named by output.loggers, as sinks. Each runs on its own thread, so a slow
or failing logger (a tracking server that is down) never stops or slows training: its first
error prints one warning and the logger is dropped for the rest of the run."""

from __future__ import annotations

import contextlib
import importlib.util
import queue
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..errors import UserError
from . import Record, RunStart, Sink

if TYPE_CHECKING:
    from ..config import Config


def logger_sinks(cfg: Config, run_dir: Path) -> list[Sink]:
    """One sink per name in cfg.output.loggers, in order. A logger whose package is not installed
    is a UserError with the pip command (checked here, before any training)."""
    sinks: list[Sink] = []
    for name in cfg.output.loggers:
        if importlib.util.find_spec(name) is None:  # the package is named like the logger
            raise UserError(f"output.loggers: {name} is not installed; pip install \"mltrain[{name}]\"")
        if name == "tensorboard":
            from .tensorboard import TensorBoardSink

            sink: Sink = TensorBoardSink(run_dir / "tensorboard")
        else:
            from .mlflow import MLflowSink

            sink = MLflowSink(run_dir, cfg.output.mlflow_uri, cfg.output.mlflow_log_model)
        sinks.append(Background(name, sink))
    return sinks


class Background(Sink):
    """Passes events to `sink` in order on a worker thread; the loop only queues them. At finish it
    waits for the logger to send what it holds, as long as the logger keeps answering."""

    queue_size = 10_000  # events a logger may fall behind by before it is dropped
    stall_s = 60.0  # a logger busy with one event for longer than this (seconds) is given up

    def __init__(self, name: str, sink: Sink):
        self.name, self.sink = name, sink
        self._queue: queue.Queue = queue.Queue(self.queue_size)
        self._thread: threading.Thread | None = None
        self._failed = False
        self._busy_since: float | None = None  # when the logger began the event it is on
        self._lock = threading.Lock()  # the loop and the worker may both stop the logger

    def start(self, run: RunStart) -> None:
        self._thread = threading.Thread(target=self._work, name=f"mltrain-{self.name}", daemon=True)
        self._thread.start()
        self._post(self.sink.start, run)

    def step(self, record: Record) -> None:
        self._post(self.sink.step, dict(record))

    def validation(self, record: Record) -> None:
        self._post(self.sink.validation, dict(record))

    def epoch(self, record: Record) -> None:
        self._post(self.sink.epoch, dict(record))

    def test(self, metrics: Record) -> None:
        self._post(self.sink.test, dict(metrics))

    def finish(self, summary: dict[str, Any]) -> None:
        if self._thread is None:
            return
        self._post(self.sink.finish, dict(summary))
        with contextlib.suppress(queue.Full):  # a logger already dropped is not waited for
            self._queue.put(None, timeout=0 if self._failed else self.stall_s)
        while not self._failed and self._thread.is_alive():
            self._thread.join(0.1)
            self._check_answering()

    def _post(self, event: Callable[[Any], None], argument: Any) -> None:
        if self._failed or self._thread is None:
            return
        self._check_answering()
        try:
            self._queue.put_nowait((event, argument))
        except queue.Full:
            self._stop(f"it fell {self.queue_size} events behind training")

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._failed:
                continue
            event, argument = item
            self._busy_since = time.monotonic()
            try:
                event(argument)
            except Exception as error:  # noqa: BLE001 - any logger failure is reported the same way
                first_line = str(error).strip().split("\n", 1)[0][:200]
                self._stop(first_line or type(error).__name__)
            self._busy_since = None

    def _check_answering(self) -> None:
        busy_since = self._busy_since
        if busy_since is not None and time.monotonic() - busy_since > self.stall_s:
            self._stop(f"it has not answered for {self.stall_s:g} s")

    def _stop(self, reason: str) -> None:
        with self._lock:
            warn, self._failed = not self._failed, True
        if warn:
            print(f"warning: the {self.name} logger stopped ({reason}); training goes on without it",
                  file=sys.stderr, flush=True)
