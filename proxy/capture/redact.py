"""Redaction: the rules of `capture.redact`, applied to a body before it is
written anywhere (the usage queue, the spill file, the database).

Patterns act on decoded strings (object keys and values alike), not on the
serialised JSON, so an escaped quote or a unicode escape cannot hide a secret
from them and a replacement can never break the JSON around it.
"""

from __future__ import annotations

from typing import Any

from . import jsonpath
from .settings import RedactRule


def redact_json(value: Any, rules: tuple[RedactRule, ...]) -> Any:
    for rule in rules:
        if rule.path is None:
            value = _strings(value, rule)
        elif rule.pattern is None:
            value = jsonpath.apply(value, rule.path, lambda _v, r=rule: r.replacement)
        else:
            value = jsonpath.apply(value, rule.path, lambda v, r=rule: _strings(v, r))
    return value


def redact_text(text: str, rules: tuple[RedactRule, ...]) -> str:
    """Plain text (a stream's assembled answer): only the rules without a path apply,
    since a path names a place in a JSON body that text does not have."""
    for rule in rules:
        if rule.path is None and rule.pattern is not None:
            text = rule.pattern.sub(_literal(rule.replacement), text)
    return text


def _strings(value: Any, rule: RedactRule) -> Any:
    if isinstance(value, str):
        return rule.pattern.sub(_literal(rule.replacement), value)
    if isinstance(value, dict):
        return {_strings(k, rule): _strings(v, rule) for k, v in value.items()}
    if isinstance(value, list):
        return [_strings(v, rule) for v in value]
    return value


def _literal(replacement: str):
    # A function, so that a backslash or `\1` in the YAML is taken as written.
    return lambda _match: replacement
