"""Password rules and bcrypt, which always runs off the event loop.

bcrypt reads at most 72 bytes; a longer password would be silently truncated,
so it is refused instead. The same `Hasher` verifies API keys (well under 72
bytes) so that every bcrypt call in the process shares one bounded pool.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
from concurrent.futures import ThreadPoolExecutor

import bcrypt

from ..config.snapshot import AuthSettings
from ..errors import InvalidRequest

BCRYPT_MAX_BYTES = 72


def check_password(password: str, settings: AuthSettings, *, param: str = "password") -> bytes:
    """The password as bytes, if the policy accepts it; never quotes it back."""
    encoded = password.encode("utf-8", "surrogatepass")
    if len(encoded) > BCRYPT_MAX_BYTES:
        raise InvalidRequest(
            f"The password is {len(encoded)} bytes long in UTF-8; the limit is "
            f"{BCRYPT_MAX_BYTES} bytes. Choose a shorter password.",
            param=param,
        )
    if len(password) < settings.password_min_length:
        raise InvalidRequest(
            f"The password must be at least {settings.password_min_length} characters long.",
            param=param,
        )
    return encoded


def check_length_only(password: str, *, param: str = "password") -> bytes:
    """For login: an over-long password cannot match, and bcrypt would reject it."""
    encoded = password.encode("utf-8", "surrogatepass")
    if len(encoded) > BCRYPT_MAX_BYTES:
        raise InvalidRequest(
            f"Passwords are at most {BCRYPT_MAX_BYTES} bytes long in UTF-8.", param=param
        )
    return encoded


def hash_secret(secret: bytes, rounds: int) -> str:
    return bcrypt.hashpw(secret, bcrypt.gensalt(rounds)).decode("ascii")


def verify_secret(secret: bytes, hashed: str) -> bool:
    return bcrypt.checkpw(secret, hashed.encode("ascii"))


def hash_rounds(hashed: str) -> int:
    """The cost a stored hash was made with (`$2b$12$...` -> 12)."""
    return int(hashed.split("$")[2])


class Hasher:
    """bcrypt on a dedicated pool, so it neither blocks the loop nor starves
    the default executor that other features use."""

    def __init__(self, *, workers: int | None = None) -> None:
        self._workers = workers or max(2, min(4, os.cpu_count() or 1))
        self._pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="bcrypt")
        self._dummies: dict[int, str] = {}
        self.verifications = 0
        self.hashes = 0

    async def hash(self, secret: bytes, rounds: int) -> str:
        self.hashes += 1
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, hash_secret, secret, rounds)

    async def verify(self, secret: bytes, hashed: str) -> bool:
        self.verifications += 1
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, verify_secret, secret, hashed)

    def submit_verify(self, secret: bytes, hashed: str) -> "concurrent.futures.Future[bool]":
        """The check as pool work, for callers that bound it themselves (`BcryptGate`)."""
        self.verifications += 1
        return self._pool.submit(verify_secret, secret, hashed)

    async def dummy_hash(self, rounds: int) -> str:
        """A hash of the given cost that matches nothing anyone can send."""
        dummy = self._dummies.get(rounds)
        if dummy is None:
            dummy = self._dummies[rounds] = await self.hash(b"no such account", rounds)
        return dummy

    async def verify_unknown(self, secret: bytes, rounds: int) -> None:
        """Spend the time a real check would, so a missing account is not
        distinguishable from a wrong password by timing."""
        await self.verify(secret, await self.dummy_hash(rounds))

    @property
    def workers(self) -> int:
        return self._workers

    def close(self) -> None:
        self._pool.shutdown(wait=True)


