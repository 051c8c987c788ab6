"""Reading YAML files while remembering where each value came from.

Schema and cross-field errors must name the file and line of the offending
value, so the loader keeps a map from JSON path to (file, line) beside the data.

A config file is input the gateway re-reads while serving, so reading it is
bounded: its size, how deep it nests (libyaml's composer recurses in C and
crashes the process on a few thousand levels) and how many values it expands
to once aliases are followed (a 500-byte alias bomb is billions of values).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import yaml

Path = tuple  # a JSON path: ("upstreams", 1, "weight")

# Far above any real config (500 upstreams and 200 plans are about 200 KB),
# far below what would hurt a reload.
MAX_FILE_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 64
MAX_ALIASES = 10_000
# Values after following aliases; 500 upstreams and 200 plans are about 15,000.
MAX_NODES = 250_000

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
            raw = fh.read(MAX_FILE_BYTES + 1)
    except IsADirectoryError:
        raise ConfigProblem("is a directory, not a YAML file", file=file) from None
    except OSError as exc:
        raise ConfigProblem(f"cannot read file: {exc.strerror}", file=file) from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigProblem(f"file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB; "
                            "a config file is never that big", file=file)
    source.files.append(file)
    source.raw[file] = raw
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigProblem(f"file is not UTF-8 (byte {exc.start})", file=file) from None
    try:
        try:
            check_shape(text, file, _COMPOSER)
            node = _compose(text, _COMPOSER)
        except yaml.YAMLError:
            # The pure-Python parser words its errors better ("but got ':'"); errors are rare.
            check_shape(text, file, yaml.SafeLoader)
            node = _compose(text, yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise _yaml_problem(exc, text, file) from None
    if node is None:
        return  # an empty file contributes nothing
    if not isinstance(node, yaml.MappingNode):
        raise ConfigProblem("top level must be a mapping of sections", file=file,
                            line=node.start_mark.line + 1)
    locations: dict[Path, Location] = {}
    document = _Constructor(file, locations).construct(node, ())
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


# libyaml's composer when PyYAML was built with it: several times faster on
# large configs, with the same line marks.
_COMPOSER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_NESTING = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_UNNESTING = (yaml.MappingEndEvent, yaml.SequenceEndEvent)


def check_shape(text: str, file: str, loader: type) -> None:
    """Refuse nesting and aliases beyond the bounds before anything is composed.

    The parser keeps its own stack, so it walks any depth safely; stopping at
    the first event past a bound keeps a hostile file cheap.
    """
    depth = aliases = 0
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, _NESTING):
            depth += 1
            if depth > MAX_DEPTH:
                raise ConfigProblem(f"nested deeper than {MAX_DEPTH} levels", file=file,
                                    line=event.start_mark.line + 1)
        elif isinstance(event, _UNNESTING):
            depth -= 1
        elif isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_ALIASES:
                raise ConfigProblem(f"more than {MAX_ALIASES} aliases", file=file,
                                    line=event.start_mark.line + 1)


def _compose(text: str, loader_class: type) -> yaml.Node | None:
    # A loader per call: a shared one keeps the last document's nodes (and
    # with them every anchor) referenced until the next reload replaces them.
    loader = loader_class(text)
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()


class _Constructor:
    """Plain values from composed nodes, noting where each came from."""

    def __init__(self, file: str, locations: dict[Path, Location]) -> None:
        self.file = file
        self.locations = locations
        self.nodes = 0
        self._scalars = yaml.SafeLoader("")

    def construct(self, node: yaml.Node, path: Path) -> Any:
        # An alias is the same node object again: counting visits, not nodes,
        # bounds what a chain of aliases expands to.
        self.nodes += 1
        if self.nodes > MAX_NODES:
            # No line: the value that tips it over says nothing about where the alias is.
            raise ConfigProblem(f"expands to more than {MAX_NODES} values once aliases are followed "
                                "(an alias bomb?)", file=self.file)
        file, locations = self.file, self.locations
        locations[path] = Location(file, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            result: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self._scalar(key_node, path)
                if not isinstance(key, (str, int, float, bool)) or isinstance(key, bool):
                    raise ConfigProblem("mapping keys must be strings", file=file,
                                        line=key_node.start_mark.line + 1, path=path)
                key = str(key)
                if key in result:
                    raise ConfigProblem(f"duplicate key '{key}'", file=file,
                                        line=key_node.start_mark.line + 1, path=path + (key,))
                result[key] = self.construct(value_node, path + (key,))
                # Point a key's errors at the key's line rather than its value's.
                locations[path + (key,)] = Location(file, key_node.start_mark.line + 1)
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self.construct(item, path + (i,)) for i, item in enumerate(node.value)]
        return self._scalar(node, path)

    def _scalar(self, node: yaml.Node, path: Path) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise ConfigProblem("mapping keys must be strings", file=self.file,
                                line=node.start_mark.line + 1, path=path)
        try:
            return self._scalars.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            raise ConfigProblem(f"invalid value: {getattr(exc, 'problem', exc)}", file=self.file,
                                line=node.start_mark.line + 1, path=path) from None
