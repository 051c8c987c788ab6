"""Where a webhook may connect: public addresses only, unless the config allows a network.

The check lives in the connection. The client's socket factory (see
`vetting_socket_factory`) sees the exact address every socket is about to
connect to, whatever produced it (a DNS answer, an IP literal, a second
resolution after a rebinding), and refuses before a byte is sent. The check
at endpoint creation (`vet_url`) only gives a clear 400 early; it proves
nothing about later connections, which are vetted again, one by one.

Refused: private (RFC 1918, ULA), loopback, link-local (169.254/16, the
metadata address 169.254.169.254 among them, fe80::/10), CGNAT 100.64/10,
unspecified, multicast, reserved and every other non-global range, and the
IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d), 6to4 and NAT64
forms of those. Every spelling of a host (`127.1`, `2130706433`,
`[::ffff:127.0.0.1]`, `localhost`) reaches the vetting as the address it
resolves to.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from typing import Callable, Iterable

from yarl import URL

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_METADATA = ipaddress.ip_address("169.254.169.254")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")

@dataclass(frozen=True, slots=True)
class NetworkPolicy:
    allow_networks: tuple[Network, ...] = ()
    allow_http: bool = False

class Refused(OSError):
    """A connection or URL the policy forbids; the message says why."""

def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, compatible, 6to4, NAT64)."""
    if ip.version != 6:
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _IPV4_COMPATIBLE and int(ip) > 1:  # :: and ::1 are themselves
        return ipaddress.IPv4Address(int(ip))
    return None

def refusal(ip: IPAddress, policy: NetworkPolicy) -> str | None:
    """Why `ip` may not be connected to, or None when it may."""
    if any(ip.version == net.version and ip in net for net in policy.allow_networks):
        return None
    inner = embedded_ipv4(ip)
    if inner is not None:
        why = refusal(inner, policy)
        return None if why is None else f"{why} (written as {ip})"
    if ip == _METADATA:
        return f"{ip}, the cloud metadata address"
    if ip.is_loopback:
        return f"{ip}, a loopback address"
    if ip.is_link_local:
        return f"{ip}, a link-local address"
    if ip.is_unspecified:
        return f"{ip}, the unspecified address"
    if ip.is_multicast:
        return f"{ip}, a multicast address"
    if ip.version == 4 and ip in _CGNAT:
        return f"{ip}, a carrier-grade NAT (100.64.0.0/10) address"
    if ip.is_private:
        return f"{ip}, a private address"
    if not ip.is_global:
        return f"{ip}, not a public address"
    return None

def vetting_socket_factory(policy: Callable[[], NetworkPolicy]):
    """A socket factory for aiohttp's TCPConnector that refuses to create a
    socket for an address the current policy forbids."""

    def factory(addr_info) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        ip = ipaddress.ip_address(sockaddr[0].split("%", 1)[0])
        why = refusal(ip, policy())
        if why is not None:
            raise Refused(f"webhook connection refused: {why}, is not allowed")
        return socket.socket(family=family, type=type_, proto=proto)

    return factory

Resolve = Callable[[str, int], "asyncio.Future[list[str]] | object"]

async def resolve_with_loop(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [info[4][0] for info in infos]

async def vet_url(raw: str, policy: NetworkPolicy, resolve=resolve_with_loop) -> str:
    """The URL as stored, or Refused saying what is wrong with it (for a 400)."""
    try:
        url = URL(raw)
    except (ValueError, TypeError):
        raise Refused("url is not a valid URL") from None
    if url.scheme not in ("https", "http"):
        raise Refused("url must start with https://")
    if url.scheme == "http" and not policy.allow_http:
        raise Refused("url must use https; plain http is allowed only when webhooks.allow_http is set")
    if not url.raw_host:
        raise Refused("url names no host")
    if url.user is not None or url.password is not None:
        raise Refused("url must not carry a user name or password")
    if url.fragment:
        raise Refused("url must not carry a #fragment")
    host = url.raw_host
    try:
        addresses = await resolve(host, url.port or 443)
    except (OSError, UnicodeError):
        raise Refused(f"url host {host!r} does not resolve") from None
    for address in _unique(addresses):
        why = refusal(ipaddress.ip_address(address.split("%", 1)[0]), policy)
        if why is not None:
            raise Refused(f"url host {host!r} resolves to {why}; webhooks reach public addresses only "
                          "(or the networks listed in webhooks.allow_networks)")
    return str(url)

def _unique(addresses: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(addresses))
