"""Reading a YAML config safely, remembering where each key was written (file:line or --set).

Hostile files are refused before anything walks them: not a regular file, larger than
MAX_CONFIG_BYTES, nested deeper than MAX_DEPTH, or aliases that expand past MAX_NODES.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError, UserError

MAX_CONFIG_BYTES = 1 << 20  # 1 MiB: configs are a few hundred bytes
MAX_DEPTH = 32  # nesting levels; the deepest real config has 4
MAX_NODES = 100_000  # values after alias expansion; a real config has about 100


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads 3e-4 as a float, as YAML 1.2 does (YAML 1.1 wants 3.0e-4)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)[eE][-+]?[0-9]+
                  |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def parent_key(key: str) -> str:
    """`data.augment[0].padding` -> `data.augment[0]` -> `data.augment` -> `data` -> ``."""
    cut = max(key.rfind("."), key.rfind("["))
    return key[:cut] if cut > 0 else ""


class Locations:
    """Where each dotted key was written: 'file:line', or '--set key=value'."""

    def __init__(self, source: str):
        self.source = source
        self.places: dict[str, str] = {}

    def of(self, key: str) -> str:
        while key:
            if key in self.places:
                return self.places[key]
            key = parent_key(key)
        return self.source

    def line_of(self, key: str) -> int:
        """For sorting problems in file order (--set ones last)."""
        where = self.of(key)
        number = where.rpartition(":")[2]
        return int(number) if number.isdigit() and not where.startswith("--set") else 1 << 30


def _check_size(node: yaml.Node, path: str) -> None:
    """Refuse alias bombs and deep nesting by measuring the node graph, each node once."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, int, bool]] = [(node, 1, False)]
    while stack:
        current, depth, children_done = stack.pop()
        if depth > MAX_DEPTH:
            raise ConfigError(f"{path}:{current.start_mark.line + 1}", "",
                              f"nested more than {MAX_DEPTH} levels deep; a config needs a few")
        children = _children(current)
        if children_done:
            sizes[id(current)] = 1 + sum(sizes[id(child)] for child in children)
            if sizes[id(current)] > MAX_NODES:
                raise ConfigError(path, "", f"expands to more than {MAX_NODES:,} values (YAML aliases "
                                  "repeated inside each other?); write the config out plainly")
            continue
        if id(current) in sizes:
            continue
        stack.append((current, depth, True))
        stack.extend((child, depth + 1, False) for child in children if id(child) not in sizes)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _record_lines(node: yaml.Node, key: str, path: str, locations: Locations) -> None:
    if isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            locations.places.setdefault(f"{key}[{index}]", f"{path}:{item.start_mark.line + 1}")
            _record_lines(item, f"{key}[{index}]", path, locations)
    if not isinstance(node, yaml.MappingNode):
        return
    seen: set[str] = set()
    for key_node, value_node in node.value:
        child = f"{key}.{key_node.value}" if key else str(key_node.value)
        where = f"{path}:{key_node.start_mark.line + 1}"
        if child in seen:
            raise ConfigError(where, child, "written twice in the same mapping; keep one")
        seen.add(child)
        locations.places[child] = where
        _record_lines(value_node, child, path, locations)


def parse_yaml(text: str, path: str, locations: Locations) -> Any:
    try:
        node = yaml.compose(text, Loader=_Loader)
        if node is None:
            return None
        _check_size(node, path)
        _record_lines(node, "", path, locations)
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else path
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(where, "", f"invalid YAML: {problem}; check the indentation and quoting there") from None
    except RecursionError:
        raise ConfigError(path, "", f"nested more than {MAX_DEPTH} levels deep; a config needs a few") from None


def read_config_text(path: Path) -> str:
    """The file's text; only regular files of a sane size (not /dev/zero, a FIFO or a folder)."""
    try:
        if not path.exists():
            raise UserError(f"config file not found: {path}")
        if not path.is_file():
            raise UserError(f"{path}: not a regular file; give a YAML config file")
        with open(path, "rb") as file:
            data = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as error:
        raise UserError(f"cannot read config file {path}: {error.strerror or error}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise UserError(f"{path}: larger than {MAX_CONFIG_BYTES >> 20} MiB; is this a config file?")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not UTF-8 text (byte {error.start}); save the config as UTF-8") from None


def parse_value(text: str, where: str = "--set") -> Any:
    """A YAML scalar or flow value, as --set takes it: `0.01`, `[256, 128]`, `null`, `adamw`;
    held to the bounds of a config file (ConfigError naming `where`)."""
    if not text.strip():
        return ""
    try:
        node = yaml.compose(text, Loader=_Loader)
        if node is not None:
            _check_size(node, where)
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError:
        return text
    except RecursionError:
        raise ConfigError(where, "", f"nested more than {MAX_DEPTH} levels deep; a config needs a few") from None


def apply_overrides(raw: dict, overrides: list[str], locations: Locations) -> None:
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError("--set", item, "expected KEY=VALUE with a dotted key, e.g. --set optimizer.lr=0.01")
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = parse_value(text, f"--set {key}")
        locations.places[key] = f"--set {item}"
        for depth in range(1, len(parts)):  # sections the file does not have were made by this --set
            locations.places.setdefault(".".join(parts[:depth]), f"--set {item}")
        for place in [place for place in locations.places if place.startswith(f"{key}.") or
                      place.startswith(f"{key}[")]:
            locations.places[place] = f"--set {item}"  # the file's lines below it no longer apply
