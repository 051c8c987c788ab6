"""Reading YAML files while remembering where each value came from.

Schema and cross-field errors must name the file and line of the offending
value, so the loader keeps a map from JSON path to (file, line) beside the data.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import yaml

Path = tuple  # a JSON path: ("upstreams", 1, "weight")

# Files the gateway writes itself (servers added through the admin API).
MANAGED_SUFFIX = ".managed.yaml"
MANAGED_DIR_FILE = "servers.managed.yaml"


@dataclass(frozen=True, slots=True)
class Location:
    file: str
    line: int  # 1-based


@dataclass
class Source:
    """The merged document of every config file, plus value locations."""

    data: dict[str, Any] = field(default_factory=dict)
    locations: dict[Path, Location] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    raw: dict[str, bytes] = field(default_factory=dict)  # file -> bytes, for the digest
    section_files: dict[str, str] = field(default_factory=dict)  # section -> first file

    def locate(self, path: Path) -> Location | None:
        """The location of `path`, or of its nearest ancestor that has one."""
        path = tuple(path)
        while True:
            loc = self.locations.get(path)
            if loc is not None or not path:
                return loc
            path = path[:-1]


class ConfigProblem(Exception):
    """One thing wrong with the config, with where and what."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 path: Path = (), value: Any = None, has_value: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.path = tuple(path)
        self.value = value
        self.has_value = has_value

    def __str__(self) -> str:
        where = self.file or "<config>"
        if self.line:
            where = f"{where}:{self.line}"
        parts = [where]
        if self.path:
            parts.append(format_path(self.path))
        parts.append(self.message)
        return ": ".join(parts)


class ConfigError(Exception):
    """A config that cannot be used; `problems` lists every error found."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def format_path(path: Path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def config_files(path: str) -> list[str]:
    """The YAML files that make up the config at `path` (a file or a directory)."""
    if os.path.isdir(path):
        names = sorted(
            n for n in os.listdir(path)
            if n.endswith((".yaml", ".yml")) and not n.startswith(".")
        )
        return [os.path.join(path, n) for n in names]
    files = [path]
    managed = managed_file_for(path)
    if os.path.exists(managed):
        files.append(managed)
    return files


def managed_file_for(path: str) -> str:
    if os.path.isdir(path):
        return os.path.join(path, MANAGED_DIR_FILE)
    stem, _ = os.path.splitext(path)
    return stem + MANAGED_SUFFIX


# Sections whose entries from several files are concatenated or merged by key;
# any other section must be written in one file only.
LIST_SECTIONS = {"upstreams", "routing"}
# upstream_overrides merges so a hand-written file and the managed file can
# each switch off their own servers.
MAP_SECTIONS = {"models", "plans", "upstream_overrides"}


def read_source(path: str) -> Source:
    if not os.path.exists(path):
        raise ConfigError([ConfigProblem("config path does not exist", file=path)])
    source = Source()
    problems: list[ConfigProblem] = []
    files = config_files(path)
    if not files:
        raise ConfigError([ConfigProblem("no .yaml files in the config directory", file=path)])
    for file in files:
        try:
            _read_file(file, source)
        except ConfigProblem as problem:
            problems.append(problem)
    if problems:
        raise ConfigError(problems)
    return source


def _read_file(file: str, source: Source) -> None:
    try:
        with open(file, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise ConfigProblem(f"cannot read file: {exc.strerror}", file=file) from None
    source.files.append(file)
    source.raw[file] = raw
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigProblem(f"file is not UTF-8 (byte {exc.start})", file=file) from None
    try:
        try:
            node = yaml.compose(text, Loader=_COMPOSER)
        except yaml.YAMLError:
            # The pure-Python parser words its errors better ("but got ':'"); errors are rare.
            node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise _yaml_problem(exc, text, file) from None
    if node is None:
        return  # an empty file contributes nothing
    if not isinstance(node, yaml.MappingNode):
        raise ConfigProblem("top level must be a mapping of sections", file=file,
                            line=node.start_mark.line + 1)
    locations: dict[Path, Location] = {}
    document = _construct(node, (), file, locations)
    for section, value in document.items():
        where = locations.get((section,))
        line = where.line if where else None
        if section in source.data:
            if section in LIST_SECTIONS and isinstance(value, list) and isinstance(source.data[section], list):
                offset = len(source.data[section])
                source.data[section].extend(value)
                _shift(locations, section, offset, source.locations)
                continue
            if section in MAP_SECTIONS and isinstance(value, dict) and isinstance(source.data[section], dict):
                for key in value:
                    if key in source.data[section]:
                        first = source.locate((section, key))
                        raise ConfigProblem(
                            f"{section} '{key}' is defined twice (first in {first.file if first else '?'})",
                            file=file, line=(locations.get((section, key)) or where or Location(file, 0)).line,
                            path=(section, key))
                source.data[section].update(value)
                _copy(locations, section, source.locations)
                continue
            raise ConfigProblem(
                f"section '{section}' is already defined in {source.section_files[section]}",
                file=file, line=line, path=(section,))
        source.data[section] = value
        source.section_files[section] = file
        _copy(locations, section, source.locations)


def _yaml_problem(exc: yaml.YAMLError, text: str, file: str) -> ConfigProblem:
    mark = getattr(exc, "problem_mark", None)
    reason = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    context_mark = getattr(exc, "context_mark", None)
    # "expected ']'" alone does not say which bracket is unclosed; the context does.
    if context and context_mark is not None:
        reason = f"{reason} ({context} that starts on line {context_mark.line + 1})"
    line = None
    if mark is not None:
        # An error at the end of the stream points past the last line; an
        # editor cannot jump there, so name the last line instead.
        last_line = max(1, len(text.splitlines()))
        line = min(mark.line + 1, last_line)
    return ConfigProblem(f"invalid YAML: {reason}", file=file, line=line)


def _copy(locations: dict[Path, Location], section: str, into: dict[Path, Location]) -> None:
    for path, loc in locations.items():
        if path and path[0] == section:
            into.setdefault(path, loc)


def _shift(locations: dict[Path, Location], section: str, offset: int,
           into: dict[Path, Location]) -> None:
    for path, loc in locations.items():
        if len(path) >= 2 and path[0] == section and isinstance(path[1], int):
            into[(section, path[1] + offset) + path[2:]] = loc


_constructor = yaml.SafeLoader("")
# libyaml's composer when PyYAML was built with it: several times faster on
# large configs, with the same line marks.
_COMPOSER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _construct(node: yaml.Node, path: Path, file: str, locations: dict[Path, Location]) -> Any:
    locations[path] = Location(file, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _constructor.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)) or isinstance(key, bool):
                raise ConfigProblem("mapping keys must be strings", file=file,
                                    line=key_node.start_mark.line + 1, path=path)
            key = str(key)
            if key in result:
                raise ConfigProblem(f"duplicate key '{key}'", file=file,
                                    line=key_node.start_mark.line + 1, path=path + (key,))
            result[key] = _construct(value_node, path + (key,), file, locations)
            # Point a key's errors at the key's line rather than its value's.
            locations[path + (key,)] = Location(file, key_node.start_mark.line + 1)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, path + (i,), file, locations) for i, item in enumerate(node.value)]
    try:
        return _constructor.construct_object(node, deep=True)
    except yaml.YAMLError as exc:
        raise ConfigProblem(f"invalid value: {getattr(exc, 'problem', exc)}", file=file,
                            line=node.start_mark.line + 1, path=path) from None
