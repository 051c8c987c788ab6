"""JSON Schema validation of config sections, one schema file per section."""

from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from typing import Any

import jsonschema

from .source import ConfigProblem, Source

# Package data, so an installed wheel validates as a checkout does (the
# checkout's top-level schemas/ is a link to this folder).
SCHEMA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "schemas")

SECTIONS = (
    "server", "database", "admin", "auth", "health", "retry",
    "upstreams", "models", "plans", "routing", "upstream_overrides", "webhooks", "billing", "limits",
    "capture",
    "cache",
)


@lru_cache(maxsize=None)
def validator(name: str) -> jsonschema.protocols.Validator:
    with open(os.path.join(SCHEMA_DIR, f"{name}.schema.json"), encoding="utf-8") as fh:
        schema = json.load(fh)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _closest_branch(error: jsonschema.ValidationError) -> jsonschema.ValidationError:
    """The failing branch of a oneOf/anyOf the author most likely meant.

    A branch that failed only because the value has another type says less than
    one that accepts the type and rejects the value: for a duration written as
    '10 seconds', "does not have the expected format" beats "is not a number".
    """
    same_type = [e for e in error.context if e.validator != "type"]
    return jsonschema.exceptions.best_match(same_type or error.context)


def _describe(error: jsonschema.ValidationError, hint: str | None = None) -> str:
    # oneOf failures list every branch; the most useful line is the closest branch's.
    if error.validator in ("oneOf", "anyOf") and error.context:
        return _describe(_closest_branch(error), error.schema.get("description") or hint)
    if error.validator == "pattern":
        expected = error.schema.get("description") or hint
        suffix = f" ({expected})" if expected else ""
        return f"{error.instance!r} does not have the expected format{suffix}"
    if error.validator == "minimum":
        return f"{error.instance!r} is too small: it must be at least {error.validator_value}"
    if error.validator == "maximum":
        return f"{error.instance!r} is too large: it must be at most {error.validator_value}"
    if error.validator == "exclusiveMinimum":
        return f"{error.instance!r} is too small: it must be greater than {error.validator_value}"
    return error.message


def _unknown_fields(error: jsonschema.ValidationError) -> list[tuple[str, str]]:
    """(field, message) for each key that `additionalProperties: false` rejected."""
    known = list(error.schema.get("properties", {}))
    patterns = error.schema.get("patternProperties", {})
    out = []
    for key in error.instance:
        if key in known or any(re.search(p, key) for p in patterns):
            continue
        hint = f" (known: {', '.join(known)})" if known else ""
        out.append((key, f"unknown field '{key}'{hint}"))
    return out


def section_errors(section: str, value: Any) -> list[tuple[tuple, str, Any]]:
    """(path, message, offending value) for each schema violation in one section's value."""
    out: list[tuple[tuple, str, Any]] = []
    for error in sorted(validator(section).iter_errors(value), key=lambda e: list(map(str, e.absolute_path))):
        path = (section,) + tuple(error.absolute_path)
        if error.validator in ("oneOf", "anyOf") and error.context:
            path += tuple(_closest_branch(error).relative_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            # Point at the misspelt key itself, not at the object holding it.
            for key, message in _unknown_fields(error):
                out.append((path + (key,), message, key))
            continue
        if path and isinstance(path[-1], str) and path[-1].endswith("_env"):
            # The usual mistake here is pasting the secret itself: never repeat the value.
            out.append((path, "must be the name of an environment variable (letters, digits and _) "
                              "that holds the secret, not the secret itself", None))
            continue
        out.append((path, _describe(error), error.instance))
    return out


def validate(source: Source) -> list[ConfigProblem]:
    problems: list[ConfigProblem] = []
    for section, value in source.data.items():
        if section not in SECTIONS:
            loc = source.locate((section,))
            problems.append(ConfigProblem(
                f"unknown section '{section}' (known: {', '.join(SECTIONS)})",
                file=loc.file if loc else None, line=loc.line if loc else None))
            continue
        for path, message, instance in section_errors(section, value):
            loc = source.locate(path)
            problems.append(ConfigProblem(
                message, file=loc.file if loc else None, line=loc.line if loc else None,
                path=path, value=instance, has_value=True))
    return problems
