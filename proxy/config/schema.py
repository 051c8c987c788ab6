"""JSON Schema validation of config sections, one schema file per section."""

from __future__ import annotations

import json
import os
from functools import lru_cache
from typing import Any

import jsonschema

from .source import ConfigProblem, Source

SCHEMA_DIR = os.environ.get(
    "BLUESMINDS_SCHEMAS",
    os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "schemas"),
)

SECTIONS = (
    "server", "database", "admin", "auth", "health", "retry",
    "upstreams", "models", "plans", "routing", "upstream_overrides",
)


@lru_cache(maxsize=None)
def validator(name: str) -> jsonschema.protocols.Validator:
    with open(os.path.join(SCHEMA_DIR, f"{name}.schema.json"), encoding="utf-8") as fh:
        schema = json.load(fh)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _describe(error: jsonschema.ValidationError) -> str:
    # oneOf failures list every branch; the most useful line is the closest branch's.
    if error.validator in ("oneOf", "anyOf") and error.context:
        best = jsonschema.exceptions.best_match(error.context)
        return _describe(best)
    if error.validator == "additionalProperties":
        return error.message.replace("Additional properties are not allowed", "unknown field")
    if error.validator == "pattern":
        return f"{error.instance!r} does not have the expected format"
    return error.message


def validate(source: Source) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    for section, value in source.data.items():
        if section not in SECTIONS:
            loc = source.locate((section,))
            problems.append(ConfigProblem(
                f"unknown section '{section}' (known: {', '.join(SECTIONS)})",
                file=loc.file if loc else None, line=loc.line if loc else None))
            continue
        for error in sorted(validator(section).iter_errors(value), key=lambda e: list(map(str, e.absolute_path))):
            if error.validator in ("oneOf", "anyOf") and error.context:
                deepest = jsonschema.exceptions.best_match(error.context)
                path = (section,) + tuple(error.absolute_path) + tuple(deepest.relative_path)
            else:
                path = (section,) + tuple(error.absolute_path)
            loc = source.locate(path)
            problems.append(ConfigProblem(
                _describe(error), file=loc.file if loc else None, line=loc.line if loc else None,
                path=path, value=error.instance, has_value=True))
    return problems


def validate_value(name: str, value: Any) -> list[jsonschema.ValidationError]:
    return list(validator(name).iter_errors(value))
