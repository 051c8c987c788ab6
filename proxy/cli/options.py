"""What the commands share: the default config path, logging, the event loop, a free port."""

from __future__ import annotations

import asyncio
import errno
import os
import socket

import click

from ..store.errors import DatabaseError


def default_config() -> str:
    # Read when a command runs, not at import: the environment is the caller's.
    return os.environ.get("BLUESMINDS_CONFIG", "config")


def configure_logging(level: str, fmt: str = "text") -> None:
    """`fmt` is server.log_format: text or json (proxy/observability/logs.py)."""
    from ..observability.logs import configure

    configure(level, fmt)


def use_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


class PortInUse(click.ClickException):
    """A port something else listens on; click prints it as one `Error:` line and exits 1."""

    def __init__(self, host: str, port: int, flag: str) -> None:
        super().__init__(f"port {port} on {host} is already in use; stop what listens there "
                         f"or choose another port with {flag}")


def is_address_in_use(exc: OSError) -> bool:
    # aiohttp re-raises a failed bind as a bare OSError whose errno is the bind's.
    return exc.errno == errno.EADDRINUSE or "address already in use" in str(exc).lower()


async def serving(coro, host: str, port: int, flag: str):
    """Await the server, turning a bind failure into one line naming the port and the flag."""
    try:
        return await coro
    except OSError as exc:
        if is_address_in_use(exc):
            raise PortInUse(host, port, flag) from None
        raise


def ensure_database(settings) -> None:
    """Open (creating and migrating) the database once before serving, so a path
    that cannot hold it is one line here rather than a traceback from start-up."""
    from ..store import open_store

    db = open_store(settings)
    path = getattr(db, "url", None) and "the PostgreSQL database" or settings.path
    try:
        db.open_sync()
    except (*DatabaseError, OSError) as exc:
        raise click.ClickException(f"cannot open the database {path}: {exc}") from None
    finally:
        db.close_sync()


def ensure_free(host: str, port: int, flag: str) -> None:
    """Fail with one line before anything starts when `port` is taken.

    The server binds with SO_REUSEADDR, so this does too: a port left in
    TIME_WAIT by the last run is free for both.
    """
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise click.ClickException(f"cannot listen on {host}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if is_address_in_use(exc):
                raise PortInUse(host, port, flag) from None
            raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None
