"""Client-supplied values made safe for a log line.

A model name is the client's string until it resolves, and it is logged even
when authentication fails: CR/LF in it could forge a line, and megabytes of it
would flood the log. Every such value in the access line goes through
`log_value`.
"""

from __future__ import annotations

LIMIT = 128


def log_value(value: str | None, limit: int = LIMIT) -> str:
    """Printable ASCII kept, everything else backslash-escaped; at most `limit`
    characters of the value, with how much was cut."""
    if not value:
        return "-"
    head = value[:limit]
    if not (head.isascii() and head.isprintable() and " " not in head):
        head = head.encode("unicode_escape").decode("ascii").replace(" ", "\\x20")
    if len(value) > limit:
        return f"{head}...(+{len(value) - limit} chars)"
    return head
