"""A sweep file: the config to search and its search space in one YAML file, kept with a project.

    sweep:
      config: ../configs/quickstart.yaml   # relative to this file
      trials: 30
      sampler: tpe                          # tpe | random | grid
      pruner: median                        # median | hyperband | none
      search:
        optimizer.lr: loguniform(1e-4, 1e-1)
        model.hidden: choice([64], [128], [256, 128])
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import UserError
from ..registry import did_you_mean

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "hyperband", "none")
_KEYS = ("config", "trials", "sampler", "pruner", "search")


@dataclass(frozen=True)
class SweepFile:
    config: Path
    search: list[tuple[str, str]]  # (KEY=DIST, "file:line") pairs
    trials: int | None
    sampler: str | None
    pruner: str | None


def read_sweep_file(path: Path) -> SweepFile | None:
    """The sweep file at `path`, or None when it is not one (an ordinary config, or not YAML:
    loading it as a config reports that)."""
    try:
        text = path.read_text(encoding="utf-8")
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if not isinstance(root, yaml.MappingNode) or "sweep" not in data:
        return None
    lines = {key.value: key.start_mark.line + 1 for key, _ in root.value}
    for key in data:
        if key != "sweep":
            raise UserError(f"{path}:{lines[key]}: a sweep file holds one mapping, sweep:, with keys "
                            f"{', '.join(_KEYS)}; move {key} into the config it names")
    sweep_node = dict((key.value, value) for key, value in root.value)["sweep"]
    sweep = data["sweep"]
    if not isinstance(sweep, dict):
        raise UserError(f"{path}:{lines['sweep']}: sweep: must be a mapping with keys {', '.join(_KEYS)}")
    where = {key.value: f"{path}:{key.start_mark.line + 1}" for key, _ in sweep_node.value}
    for key in sweep:
        if key not in _KEYS:
            raise UserError(f"{where[key]}: sweep.{key}: unknown key; {did_you_mean(str(key), list(_KEYS))}"
                            f"valid keys: {', '.join(_KEYS)}")
    for key in ("config", "search"):
        if key not in sweep:
            raise UserError(f"{path}:{lines['sweep']}: sweep.{key} is missing; {_KEYS_HELP[key]}")
    if not isinstance(sweep["config"], str):
        raise UserError(f"{where['config']}: sweep.config: {_KEYS_HELP['config']}")
    trials = sweep.get("trials")
    if trials is not None and (not isinstance(trials, int) or isinstance(trials, bool) or trials < 1):
        raise UserError(f"{where['trials']}: sweep.trials: {trials!r} must be a whole number of at least 1")
    for key, choices in (("sampler", SAMPLERS), ("pruner", PRUNERS)):
        if key in sweep and sweep[key] not in choices:
            raise UserError(f"{where[key]}: sweep.{key}: {sweep[key]!r} is not one of {', '.join(choices)}")
    return SweepFile(config=path.parent / sweep["config"], search=_search(sweep["search"], sweep_node, path),
                     trials=trials, sampler=sweep.get("sampler"), pruner=sweep.get("pruner"))


_KEYS_HELP = {
    "config": "give the config file to search, relative to this file, e.g. config: ../configs/quickstart.yaml",
    "search": "give a mapping of dotted keys to distributions, e.g. optimizer.lr: loguniform(1e-4, 1e-1)",
}


def _search(search: Any, sweep_node: yaml.MappingNode, path: Path) -> list[tuple[str, str]]:
    (search_key, search_node), = [(k, v) for k, v in sweep_node.value if k.value == "search"]
    if not isinstance(search, dict) or not search:
        raise UserError(f"{path}:{search_key.start_mark.line + 1}: sweep.search: {_KEYS_HELP['search']}")
    specs = []
    for key_node, value_node in search_node.value:
        where = f"{path}:{key_node.start_mark.line + 1}"
        value = search[key_node.value]
        if not isinstance(value, str):
            raise UserError(f"{where}: {key_node.value}: {value!r} is not a distribution; write one, e.g. "
                            "loguniform(1e-4, 1e-1) or choice(0.01, 0.1)")
        specs.append((f"{key_node.value}={value}", where))
    return specs
