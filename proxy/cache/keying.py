"""The entry key: a hash of the canonical request.

Canonical means: the route family, the resolved (canonical) model name, and
every other body field as JSON with sorted keys and no whitespace, so two
requests that differ only in key order, spacing or an alias of the model
share an entry. Fields that change how an answer is delivered or labelled but
not what it says are left out: `stream`, `stream_options`, `user`,
`metadata`. The scope (an account, or a shared plan) is part of the hash, so
one account's entries can never be read by another's requests. So is the
routing rule that matched and the model it serves (routed.py): the rules
look at facts outside the body's parameters, such as `metadata`.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

IGNORED_FIELDS = frozenset({"model", "stream", "stream_options", "user", "metadata"})


def scope_of(*, user_id: int, plan: str, shared: bool) -> str:
    return f"plan:{plan}" if shared else f"account:{user_id}"


def cache_key(*, family: str, model: str, body: dict[str, Any], scope: str, route: str = "") -> str | None:
    """The key, or None for a body that has no canonical form (nesting orjson cannot write back).
    `route` names the routing rule that matched and the model it serves (routed.py)."""
    params = {name: value for name, value in body.items() if name not in IGNORED_FIELDS}
    try:
        canonical = orjson.dumps([scope, family, model, route, params], option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        return None
    return hashlib.sha256(canonical).hexdigest()
