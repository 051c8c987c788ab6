"""Whether one request reads the cache, writes it, both or neither.

The plan decides whether its keys may use the cache at all (`enabled`), and
what a request gets when nobody says (`default`). The key's owner can turn it
on or off for the key (`cache: true|false`, null follows the plan), and a
request can decide for itself with `x-bluesminds-cache: true|false`; the most
specific word wins: header, then key, then plan. On top of a yes,
`Cache-Control: no-cache` means "do not answer me from the cache, but you may
keep my answer", and `no-store` means "neither read nor keep".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import InvalidRequest
from .settings import PlanCache

HEADER = "x-bluesminds-cache"

# Families whose answer is a pure function of the request (given the model):
# chat, completions, embeddings and new Responses. Anthropic's Messages is not
# cached: its stream framing would need a replay of its own.
CACHEABLE_FAMILIES = frozenset({"chat", "completions", "embeddings", "responses"})


@dataclass(frozen=True, slots=True)
class Decision:
    read: bool
    write: bool


OFF = Decision(read=False, write=False)
READ_WRITE = Decision(read=True, write=True)


def _header_flag(value: str | None) -> bool | None:
    if value is None:
        return None
    word = value.strip().lower()
    if word in ("true", "1", "yes", "on"):
        return True
    if word in ("false", "0", "no", "off"):
        return False
    raise InvalidRequest(f"The {HEADER} header must be true or false, not {value[:40]!r}.", code="invalid_header")


def _cache_control(value: str | None) -> tuple[bool, bool]:
    """(no_cache, no_store) from a Cache-Control header."""
    if not value:
        return False, False
    directives = {part.split("=", 1)[0].strip().lower() for part in value.split(",")}
    return "no-cache" in directives, "no-store" in directives


def responses_cacheable(body: Mapping[str, Any], *, shared: bool) -> bool:
    """A Responses request is cached only when it starts a new, foreground response.

    A follow-up (`previous_response_id`) depends on state an upstream holds, and a
    background one answers before it is done. On a shared plan, only `store: false`
    requests: a stored response's id belongs to the account that created it, and
    follow-ups with it from another account would be refused."""
    if body.get("previous_response_id") is not None or body.get("background") is True:
        return False
    return not shared or body.get("store") is False


def decide(*, family: str, body: Mapping[str, Any], plan: PlanCache, key_setting: bool | None,
           headers: Mapping[str, str]) -> Decision:
    # The header is checked first so a bad value is a 400 whatever the plan says.
    flag = _header_flag(headers.get(HEADER))
    if not plan.enabled or family not in CACHEABLE_FAMILIES:
        return OFF
    if family == "responses" and not responses_cacheable(body, shared=plan.shared):
        return OFF
    wanted = flag if flag is not None else key_setting if key_setting is not None else plan.default
    if not wanted:
        return OFF
    no_cache, no_store = _cache_control(headers.get("Cache-Control"))
    if no_store:
        return OFF
    return Decision(read=not no_cache, write=True)
