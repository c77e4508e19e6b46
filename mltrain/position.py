"""Where a run stands and what it has done: its step and epoch, samples and time spent. A
checkpoint holds all of it (`state_dict`), so a resumed run counts on as if it had never stopped."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any


def now_iso() -> str:
    """The local time with its UTC offset, ISO 8601: 2026-11-24T09:03:09+01:00."""
    return datetime.now().astimezone().isoformat(timespec="seconds")


class Position:
    def __init__(self, steps_in_epoch: int):
        self.steps_in_epoch = steps_in_epoch  # optimizer steps in a full epoch (from the config, not state)
        self.step = 0  # optimizer steps taken over the whole run
        self.epoch = 0  # the epoch in progress, from 1; 0 before the first
        self.epoch_step = steps_in_epoch  # optimizer steps done in `epoch`; a full epoch: the next step starts one
        self.epochs_completed = 0
        self.samples_seen = 0  # training samples of the completed epochs
        self.epoch_seconds = 0.0  # training time of the epoch in progress (s), validation excluded
        self.train_seconds = 0.0  # training time of the completed epochs (s)
        self.started_at: str | None = now_iso()  # when the run first started (None: not recorded)
        self.stopped: str | None = None  # why the run ended before its last step (early stopping, a sink)
        self._elapsed_before = 0.0  # wall time (s) of earlier attempts of a resumed run
        self._began = time.perf_counter()  # this attempt
        self._epoch_began = self._began

    @property
    def epoch_done(self) -> bool:
        return self.epoch_step >= self.steps_in_epoch

    @property
    def elapsed(self) -> float:
        """Wall time (s) the run has taken, over every attempt."""
        return self._elapsed_before + time.perf_counter() - self._began

    def next_epoch(self) -> None:
        self.epoch += 1
        self.epoch_step, self.epoch_seconds = 0, 0.0

    def start_clock(self) -> None:
        """Time the epoch's steps from here on, continuing what a checkpoint had counted."""
        self._epoch_began = time.perf_counter() - self.epoch_seconds

    def advance(self) -> None:
        """One optimizer step taken."""
        self.step += 1
        self.epoch_step += 1
        self.epoch_seconds = time.perf_counter() - self._epoch_began

    def end_epoch(self, samples: int) -> None:
        self.train_seconds += self.epoch_seconds
        self.samples_seen += samples
        self.epochs_completed = self.epoch

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "epoch": self.epoch, "epoch_step": self.epoch_step,
                "epochs_completed": self.epochs_completed, "samples_seen": self.samples_seen,
                "epoch_seconds": self.epoch_seconds, "train_seconds": self.train_seconds,
                "elapsed_s": self.elapsed, "started_at": self.started_at, "stopped": self.stopped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Raises ValueError naming the entry that is missing or impossible (a damaged or edited file)."""
        counts = {key: _count(state, key) for key in ("step", "epoch", "epoch_step", "epochs_completed",
                                                      "samples_seen")}
        if counts["epoch_step"] > self.steps_in_epoch or counts["epochs_completed"] > counts["epoch"]:
            raise ValueError(f"epoch_step {counts['epoch_step']} (of {self.steps_in_epoch} per epoch), epoch "
                             f"{counts['epoch']} and epochs_completed {counts['epochs_completed']} do not fit "
                             "together")
        seconds = {key: _seconds(state, key) for key in ("epoch_seconds", "train_seconds", "elapsed_s")}
        texts = {key: _text(state, key) for key in ("started_at", "stopped")}
        for key, value in counts.items():
            setattr(self, key, value)
        self.epoch_seconds, self.train_seconds = seconds["epoch_seconds"], seconds["train_seconds"]
        self._elapsed_before, self._began = seconds["elapsed_s"], time.perf_counter()
        self.started_at, self.stopped = texts["started_at"], texts["stopped"]


def _count(state: dict[str, Any], key: str) -> int:
    value = state.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{key} is {value!r}, not a whole number of 0 or more")
    return value


def _seconds(state: dict[str, Any], key: str) -> float:
    value = state.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{key} is {value!r}, not a duration in seconds")
    return float(value)


def _text(state: dict[str, Any], key: str) -> str | None:
    value = state.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{key} is {value!r}, not text")
    return value


@dataclass(frozen=True)
class Renumbering:
    """A run resumed with another number of processes takes global batches of another size, so it
    counts steps in other units. This maps the earlier part's steps to the resumed part's: an
    epoch's end stays its end; mid-epoch, a step becomes the number of the new, larger or smaller
    steps whose samples it had consumed."""
    saved_step: int  # the checkpoint's step, in the earlier units
    old_in_epoch: int  # optimizer steps per epoch, earlier and now
    new_in_epoch: int
    old_samples_per_step: int  # samples per optimizer step (every process's), earlier and now
    new_samples_per_step: int

    def epoch_step(self, old_epoch_step: int) -> int:
        if old_epoch_step >= self.old_in_epoch:
            return self.new_in_epoch
        return min(old_epoch_step * self.old_samples_per_step // self.new_samples_per_step, self.new_in_epoch)

    def step(self, epoch: int, old_step: int) -> int:
        """The new step of an earlier record made at `old_step` in `epoch` (counted from 1)."""
        done = max(epoch - 1, 0)
        return done * self.new_in_epoch + self.epoch_step(old_step - done * self.old_in_epoch)
