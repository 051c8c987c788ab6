"""The client's address, as every per-address throttle and log line must see it.

The connection's peer is the client unless the peer is one of
`server.trusted_proxies`. Only then is `X-Forwarded-For` read, right to left,
skipping hops that are themselves trusted proxies: the first untrusted hop is
the client. The left part of that header is whatever the client wrote, so it
is never believed on its own; a hop that is not an address stops the walk at
the last trusted hop, which keeps a forged header from choosing a bucket.
"""

from __future__ import annotations

import ipaddress
from typing import Iterable

from aiohttp import web

from ..appkeys import CONFIG

_ADDRESS: web.RequestKey[str] = web.RequestKey("bluesminds.client_address", str)
UNKNOWN = "unknown"


def client_address(request: web.Request) -> str:
    """The address the request came from, resolved once per request."""
    trusted = request.app[CONFIG].current.server.trusted_proxies
    peer = request.remote  # aiohttp computes it once per request
    if not trusted and peer and ":" not in peer:
        # The common case, on every /v1 request: no proxy to believe, and an IPv4
        # peer as the socket reports it is already in canonical form. Nothing to
        # keep: the request's own dict is a Python-level mapping, dearer than this.
        return peer
    found = request.get(_ADDRESS)
    if found is None:
        found = request[_ADDRESS] = resolve(peer, request.headers.getall("X-Forwarded-For", ()), trusted)
    return found


def resolve(peer: str | None, forwarded_for: Iterable[str], trusted: tuple) -> str:
    hop = _parse(peer)
    if hop is None:
        return peer or UNKNOWN
    if not _trusted(hop, trusted):
        return str(hop)
    hops = [part.strip() for value in forwarded_for for part in value.split(",")]
    for text in reversed(hops):
        previous, hop = hop, _parse(text)
        if hop is None:
            return str(previous)
        if not _trusted(hop, trusted):
            return str(hop)
    return str(hop)


def _parse(text: str | None):
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    # An IPv4 client seen through a dual-stack socket is the same client.
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped or address


def _trusted(address, networks: tuple) -> bool:
    return any(address.version == net.version and address in net for net in networks)
