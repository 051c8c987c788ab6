"""Upstream URLs: parsed once at load, so a URL no request could use is a config error.

The schema's pattern only checks the outline; `http://127.0.0.1:99999` and
`http://[::1` pass it and would fail inside every request to that upstream.

A trailing `/v1` is dropped rather than refused: the gateway appends the
OpenAI path (`/v1/chat/completions`) itself, and `…:4000/v1` is what an
operator copies from a client's `base_url`, meaning the same server. Refusing
it would only make them delete three characters; keeping it would send every
request to `/v1/v1/…` and answer 503. The builder logs a note when it strips.
"""

from __future__ import annotations

from urllib.parse import urlsplit

OPENAI_PREFIX = "/v1"


class BadURL(ValueError):
    """A URL that cannot be used, with a message fit for a config error."""


def normalise_upstream_url(url: str) -> tuple[str, bool]:
    """(url without trailing slash or `/v1`, whether `/v1` was stripped); BadURL if unusable."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        # urlsplit words these well: "Invalid IPv6 URL", "Port out of range 0-65535".
        raise BadURL(f"{url!r} is not a usable URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise BadURL(f"{url!r} is not a usable URL: the scheme must be http or https")
    if not parts.hostname:
        raise BadURL(f"{url!r} is not a usable URL: it names no host")
    if port == 0:
        raise BadURL(f"{url!r} is not a usable URL: port 0 cannot be connected to")
    if parts.username is not None or parts.password is not None:
        # The value is not repeated: it holds a secret.
        raise BadURL("the URL holds credentials (user:password@); secrets do not go in YAML: "
                     "name an environment variable in api_key_env")
    clean = url.rstrip("/")
    if clean.endswith(OPENAI_PREFIX) and urlsplit(clean).path.endswith(OPENAI_PREFIX):
        return clean[: -len(OPENAI_PREFIX)].rstrip("/"), True
    return clean, False
