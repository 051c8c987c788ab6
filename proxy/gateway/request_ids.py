"""Request ids: the client's own when it is short and plain, else a new one."""

from __future__ import annotations

import itertools
import re
import secrets

_SAFE = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class RequestIds:
    """A random per-app prefix and a counter: unique across restarts and
    processes without a syscall or a uuid per request. One per app, so two
    apps in one process (tests, a demo) never share a sequence."""

    __slots__ = ("_prefix", "_counter")

    def __init__(self) -> None:
        self._prefix = "req_" + secrets.token_hex(6)
        self._counter = itertools.count(1)

    def of(self, given: str | None) -> str:
        if given and _SAFE.fullmatch(given):
            return given
        return f"{self._prefix}{next(self._counter):08x}"
