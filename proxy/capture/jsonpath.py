"""The JSONPath subset redaction rules use: `$`, `.name`, `['name']`, `[N]`, `[*]`.

That covers paths into OpenAI bodies (`$.messages[*].content`,
`$.input[0]`, `$.metadata['user-email']`); filters and recursive descent
are left out on purpose, so a rule always names exactly where it acts.
"""

from __future__ import annotations

import re
from typing import Any, Callable

WILD = object()  # `[*]` or `.*`: every element or member
Step = str | int | object

_TOKEN = re.compile(r"""\.([A-Za-z_][A-Za-z0-9_-]*|\*)|\[(\*|-?\d+|'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")\]""")


class BadPath(ValueError):
    pass


def parse(path: str) -> tuple[Step, ...]:
    if not path.startswith("$"):
        raise BadPath("must start with '$' (the whole body), such as $.messages[*].content")
    steps: list[Step] = []
    at = 1
    while at < len(path):
        match = _TOKEN.match(path, at)
        if match is None:
            raise BadPath(f"cannot read {path[at:]!r} at position {at}; use .name, ['name'], [N] or [*]")
        name, bracket = match.groups()
        if name is not None:
            steps.append(WILD if name == "*" else name)
        elif bracket == "*":
            steps.append(WILD)
        elif bracket[0] in "'\"":
            steps.append(re.sub(r"\\(.)", r"\1", bracket[1:-1]))
        else:
            steps.append(int(bracket))
        at = match.end()
    return tuple(steps)


def apply(value: Any, steps: tuple[Step, ...], fn: Callable[[Any], Any]) -> Any:
    """`value` with `fn` applied to whatever the path names; the rest is left as it is."""
    if not steps:
        return fn(value)
    step, rest = steps[0], steps[1:]
    if step is WILD:
        if isinstance(value, dict):
            return {k: apply(v, rest, fn) for k, v in value.items()}
        if isinstance(value, list):
            return [apply(v, rest, fn) for v in value]
        return value
    if isinstance(step, int):
        if isinstance(value, list) and -len(value) <= step < len(value):
            copy = list(value)
            copy[step] = apply(copy[step], rest, fn)
            return copy
        return value
    if isinstance(value, dict) and step in value:
        copy = dict(value)
        copy[step] = apply(copy[step], rest, fn)
        return copy
    return value
