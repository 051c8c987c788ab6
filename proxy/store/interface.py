"""What the application reads and writes, and nothing about how: the store seam.

Datasette's shape: reads run anywhere, every write is funnelled through one
writer, and the code above never holds a connection of its own; it hands a
function over and gets the function's result back. `Database` (SQLite, one
writer thread) is the first implementation; a PostgreSQL store implements
the same methods, and its `fn` receives that driver's connection.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, TypeVar, runtime_checkable

T = TypeVar("T")
Connection = Any  # the backend's connection: sqlite3.Connection for Database


@runtime_checkable
class Store(Protocol):
    path: str

    async def open(self) -> None:
        """Create what is missing and apply the migrations."""

    async def close(self) -> None: ...

    async def read(self, fn: Callable[[Connection], T]) -> T:
        """`fn(conn)` on a read-only connection, off the event loop."""

    async def write(self, fn: Callable[[Connection], T]) -> T:
        """`fn(conn)` in one transaction on the single writer: all of it or none."""

    async def write_once(self, key: str, fn: Callable[[Connection], Any]) -> bool:
        """`write(fn)`, recording `key` in the same transaction: True if it ran,
        False if a transaction with this key had already committed."""

    def read_sync(self, fn: Callable[[Connection], T]) -> T: ...

    def write_sync(self, fn: Callable[[Connection], T]) -> T: ...

    @property
    def problem(self) -> str | None:
        """Why writes are refused right now, or None while they are accepted."""
