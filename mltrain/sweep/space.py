"""The search space: `KEY=DIST` specs parsed, checked against the config, and drawn per trial.

    uniform(LOW, HIGH)      a float in [LOW, HIGH]
    loguniform(LOW, HIGH)   a float in [LOW, HIGH], uniform in log space (0 < LOW)
    int(LOW, HIGH)          an integer in [LOW, HIGH]
    logint(LOW, HIGH)       an integer in [LOW, HIGH], uniform in log space (1 <= LOW)
    choice(V1, V2, ...)     one of the values, each a YAML value as --set takes it:
                            choice(adam, sgd), choice([64], [256, 128])

A trial's values reach the config as `--set KEY=VALUE` overrides, so a searched key is
validated exactly like a --set one.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import yaml

from ..errors import ConfigError, UserError
from ..registry import did_you_mean

DISTRIBUTIONS = ("uniform", "loguniform", "int", "logint", "choice")
_SPEC = re.compile(r"^\s*(?P<key>[^=\s]+)\s*=\s*(?P<dist>\w+)\s*\((?P<args>.*)\)\s*$", re.S)
_OBJECTIVE_KEYS = ("train.monitor", "train.monitor_mode")  # they define what the sweep optimises


@dataclass(frozen=True)
class Param:
    key: str  # the dotted config key
    dist: str  # one of DISTRIBUTIONS
    low: float | int | None = None  # numeric distributions: bounds, inclusive
    high: float | int | None = None
    choices: tuple[str, ...] = ()  # choice: each value's YAML text, as written
    origin: str = ""  # `--search KEY=DIST` or the sweep file's `file:line`, for messages

    def suggest(self, trial: Any) -> Any:
        """Draw this parameter in an Optuna trial (a retried trial gets back its earlier value)."""
        if self.dist == "choice":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.dist in ("int", "logint"):
            return trial.suggest_int(self.key, self.low, self.high, log=self.dist == "logint")
        return trial.suggest_float(self.key, self.low, self.high, log=self.dist == "loguniform")

    def override(self, value: Any) -> str:
        """The --set override for a drawn value; repr keeps a float's every digit."""
        return f"{self.key}={value if isinstance(value, str) else repr(value)}"

    def probes(self) -> list[Any]:
        """Values that stand for the whole range when checking it against the config."""
        return list(self.choices) if self.dist == "choice" else [self.low, self.high]

    def grid(self) -> Sequence[Any]:
        if self.dist == "choice":
            return self.choices
        if self.dist in ("int", "logint"):
            return range(self.low, self.high + 1)
        raise UserError(f"{self.origin}: the grid sampler needs a finite set of values; {self.dist} has none. "
                        "Use choice(...) or int(...), or --sampler tpe")


def _split_args(text: str) -> list[str]:
    """Split at the commas outside brackets, braces and quotes: `[64], [256, 128]` -> 2 items."""
    items, depth, quote, current = [], 0, "", ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            items.append(current.strip())
            current = ""
            continue
        current += char
    items.append(current.strip())
    return items


def _number(text: str, integer: bool) -> float | int | None:
    try:
        value = float(text)
    except ValueError:
        return None
    if not math.isfinite(value) or (integer and not value.is_integer()):
        return None
    return int(value) if integer else value


def parse_param(text: str, origin: str) -> Param:
    """One `KEY=DIST(...)` spec; a malformed or impossible one is a UserError naming `origin`."""
    def bad(problem: str) -> UserError:
        return UserError(f"{origin}: {problem}")

    match = _SPEC.match(text)
    if not match:
        raise bad("expected KEY=DIST(...), e.g. optimizer.lr=loguniform(1e-4, 1e-1) or "
                  "model.hidden=choice([64], [128])")
    key, dist, args = match["key"], match["dist"], _split_args(match["args"])
    if dist not in DISTRIBUTIONS:
        raise bad(f"unknown distribution '{dist}'; {did_you_mean(dist, list(DISTRIBUTIONS))}"
                  f"choose from: {', '.join(DISTRIBUTIONS)}")
    if key in _OBJECTIVE_KEYS:
        raise bad(f"{key} decides what the sweep optimises; set it in the config, not in the search")
    if dist == "choice":
        if args == [""] or "" in args:
            raise bad("choice needs values separated by commas, e.g. choice(adam, sgd)")
        for item in args:
            try:
                yaml.safe_load(item)
            except yaml.YAMLError:
                raise bad(f"choice value {item!r} is not a valid YAML value") from None
        if len(set(args)) < len(args):
            raise bad("choice lists a value twice; keep one")
        return Param(key, dist, choices=tuple(args), origin=origin)
    integer = dist in ("int", "logint")
    if len(args) != 2:
        raise bad(f"{dist} takes two bounds, {dist}(LOW, HIGH)")
    low, high = (_number(arg, integer) for arg in args)
    if low is None or high is None:
        kind = "integers" if integer else "finite numbers"
        raise bad(f"{dist} bounds must be {kind}, got {args[0]!r} and {args[1]!r}")
    if not low < high:
        raise bad(f"{dist} needs LOW below HIGH, got {low!r} and {high!r}")
    if dist == "loguniform" and low <= 0:
        raise bad(f"loguniform needs 0 < LOW, got {low!r}; use uniform to include 0 or negative values")
    if dist == "logint" and low < 1:
        raise bad(f"logint needs 1 <= LOW, got {low!r}; use int to include 0 or negative values")
    return Param(key, dist, low, high, origin=origin)


def parse_space(specs: list[tuple[str, str]]) -> list[Param]:
    """(text, origin) pairs -> the space; at least one parameter, each key once."""
    if not specs:
        raise UserError("nothing to search: give --search KEY=DIST, e.g. --search 'optimizer.lr=loguniform(1e-4,1e-1)'")
    params: list[Param] = []
    for text, origin in specs:
        param = parse_param(text, origin)
        if any(earlier.key == param.key for earlier in params):
            raise UserError(f"{origin}: {param.key} is searched twice; keep one")
        params.append(param)
    return params


def check_space(params: list[Param], load: Callable[[list[str]], Any]) -> None:
    """Every probe value must make a valid config (`load` of the overrides) with the rest of the
    config as written, or with one other searched key at one of its probes (d_model with heads).
    A value that fits no such config is an error naming the parameter's origin."""
    for param in params:
        for value in param.probes():
            override = param.override(value)
            try:
                load([override])
                continue
            except UserError as error:
                first_error = error
            partners = [other.override(v) for other in params if other is not param for v in other.probes()]
            if not any(_loads(load, [override, partner]) for partner in partners):
                detail = (f"{first_error.key}: {first_error.problem}" if isinstance(first_error, ConfigError)
                          and first_error.key else str(first_error))
                raise UserError(f"{param.origin}: {detail}")


def _loads(load: Callable[[list[str]], Any], overrides: list[str]) -> bool:
    try:
        load(overrides)
        return True
    except UserError:
        return False


_MOST_GRID_POINTS = 100_000  # beyond this a grid is a typo, not a plan


def grid_points(params: list[Param]) -> list[dict[str, Any]]:
    """Every combination, in the order written (the first parameter changes slowest)."""
    axes = [param.grid() for param in params]
    if math.prod(len(axis) for axis in axes) > _MOST_GRID_POINTS:
        raise UserError(f"the grid has {math.prod(len(axis) for axis in axes):,} combinations; "
                        f"narrow the int(...) ranges or use --sampler tpe")
    return [dict(zip([p.key for p in params], values)) for values in itertools.product(*axes)]
