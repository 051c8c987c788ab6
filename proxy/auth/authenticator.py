"""Who is calling /v1: a `bm-` key in, a `Principal` out, in microseconds.

The first time this process sees a key it reads the key's secret by lookup
id and checks it with bcrypt on the hasher's threads; concurrent requests
carrying the same new key share that one check. After that, the key's fast
digest maps straight to the key and its owner held in memory, and a request
costs a dict lookup and a few comparisons against the injected clock.

What a key may do changes only through writes. A write in this process calls
`forget_key`/`forget_user`, so its effect shows on the very next request;
writes from other processes (the CLI) are picked up from the change log
within `poll_interval`. Expiry needs no write: it is checked on every hit.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections import OrderedDict
from typing import Callable


from ..config.snapshot import Snapshot
from ..errors import AuthenticationFailed, RateLimited
from ..store import Database
from . import keys as key_store
from .bcrypt_gate import BcryptGate
from .passwords import Hasher
from .principal import Principal
from .tables import events_after, last_event_seq
from .throttle import LoginThrottle
from .users import User, plan_for

log = logging.getLogger(__name__)

_NO_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization "
    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY). "
    "List your API keys with GET /api/keys."
)
_WRONG_KEY = "Incorrect API key provided. List your API keys with GET /api/keys."
_GONE = object()


def _digest(token: str) -> bytes:
    return hashlib.blake2b(token.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class _Entry:
    """A key as the hot path needs it, plus the Principal built for its owner."""

    __slots__ = ("key", "secrets", "principal", "principal_user")

    def __init__(self, state: key_store.KeyAuthState) -> None:
        self.key = state.key
        self.secrets = state.secrets
        self.principal: Principal | None = None
        self.principal_user: User | None = None


class _Check:
    """A bcrypt check in flight, shared by every request carrying the same new key."""

    __slots__ = ("task", "waiters")

    def __init__(self, task: "asyncio.Task[tuple[int, int] | None]") -> None:
        self.task = task
        self.waiters = 0


class Authenticator:
    def __init__(
        self,
        hasher: Hasher,
        *,
        db: Database | None = None,
        clock: Callable[[], float] = time.time,
        poll_interval: float = 1.0,
        flush_interval: float = 5.0,
        rejected_cache_size: int = 10_000,
    ) -> None:
        self._db = db
        self._hasher = hasher
        self._clock = clock
        self._poll_interval = poll_interval
        self._flush_interval = flush_interval
        self._rejected_cache_size = rejected_cache_size
        # Failed checks per lookup id and per client address; a key already
        # verified never reaches this, so only unverified secrets are slowed.
        self._throttle = LoginThrottle(clock, window=60.0, what="failed API key checks")
        # Half the pool at most, so logins and signups always find a thread.
        self._gate = BcryptGate(concurrency=max(1, hasher.workers // 2))
        # digest of a key text -> (key id, secret id), once bcrypt said yes.
        self._verified: OrderedDict[bytes, tuple[int, int]] = OrderedDict()
        # digests bcrypt said no to: a secret's hash never changes, so neither does the answer.
        self._rejected: OrderedDict[bytes, None] = OrderedDict()
        self._keys: dict[int, _Entry] = {}
        self._users: dict[int, User] = {}
        self._inflight: dict[bytes, _Check] = {}
        # Bumped by every invalidation, so a load that raced one is used once, not cached.
        self._generation = 0
        self._last_used: dict[int, float] = {}
        self._event_seq = 0
        self._task: asyncio.Task[None] | None = None
        self.bcrypt_verifications = 0

    # -- the hot path ------------------------------------------------------------

    async def authenticate(
        self, authorization_header: str | None, snapshot: Snapshot, *, client: str | None = None
    ) -> Principal:
        """`client` is the caller's address (`client_address`), for the failure throttle."""
        if not authorization_header:
            raise AuthenticationFailed(_NO_KEY)
        if authorization_header[:7].lower() != "bearer ":
            raise AuthenticationFailed(_NO_KEY)
        token = authorization_header[7:].strip()
        if not token:
            raise AuthenticationFailed(_NO_KEY)
        digest = _digest(token)
        hit = self._verified.get(digest)
        if hit is not None:
            self._verified.move_to_end(digest)
            entry = self._keys.get(hit[0])
            if entry is not None:
                user = self._users.get(entry.key.user_id)
                if user is not None:
                    return self._admit(entry, hit[1], user, snapshot)
        return await self._authenticate_cold(token, digest, hit, snapshot, client)

    def _admit(self, entry: _Entry, secret_id: int, user: User, snapshot: Snapshot) -> Principal:
        now = self._clock()
        key = entry.key
        if key.revoked_at is not None:
            raise AuthenticationFailed(
                "This API key has been revoked. Create a new one with POST /api/keys."
            )
        retires_at = entry.secrets.get(secret_id, _GONE)
        if retires_at is _GONE or (retires_at is not None and now >= retires_at):
            raise AuthenticationFailed(
                "This API key was rotated and no longer works; use the new key, "
                "or list your API keys with GET /api/keys."
            )
        if key.expires_at is not None and now >= key.expires_at:
            raise AuthenticationFailed(
                "This API key has expired. Create a new one with POST /api/keys."
            )
        if user.disabled:
            raise AuthenticationFailed(
                "The account this API key belongs to is disabled; contact your administrator."
            )
        plan = plan_for(snapshot, user.plan).name
        principal = entry.principal
        if principal is None or entry.principal_user is not user or principal.plan != plan:
            principal = entry.principal = Principal(
                user_id=user.id,
                key_id=key.id,
                plan=plan,
                scopes=frozenset(key.scopes),
                models=key.models,
                limits=key.limits,
                tags=frozenset(key.tags),
                is_admin=user.is_admin,
                email=user.email,
                capture=key.capture,
                cache=key.cache,
            )
            entry.principal_user = user
        self._last_used[key.id] = now
        return principal

    # -- first sight of a key, or its record was invalidated ---------------------

    async def _authenticate_cold(
        self, token: str, digest: bytes, hit: tuple[int, int] | None, snapshot: Snapshot,
        client: str | None,
    ) -> Principal:
        if hit is None:
            hit = await self._verify(token, digest, snapshot, client)
        key_id, secret_id = hit
        entry = self._keys.get(key_id)
        user = self._users.get(entry.key.user_id) if entry is not None else None
        if entry is None or user is None:
            entry, user = await self._load(key_id, snapshot)
        return self._admit(entry, secret_id, user, snapshot)

    async def _verify(
        self, token: str, digest: bytes, snapshot: Snapshot, client: str | None
    ) -> tuple[int, int]:
        if digest in self._rejected:
            raise AuthenticationFailed(_WRONG_KEY)
        admin_key = snapshot.admin.key
        if admin_key and hmac.compare_digest(
            token.encode("utf-8", "surrogatepass"), admin_key.encode("utf-8", "surrogatepass")
        ):
            raise AuthenticationFailed(
                "The admin key only works on the management API (/api/...); call /v1 with a bm- key."
            )
        parsed = key_store.parse_key(token)
        if parsed is None:
            raise AuthenticationFailed(_WRONG_KEY)
        check = self._inflight.get(digest)
        if check is None:
            # Counted before the check is awaited, so a burst cannot all slip under the limit.
            buckets = (f"lookup:{parsed[0]}",) + ((f"address:{client}",) if client else ())
            stamp = self._throttle.take(buckets, snapshot.auth.key_failures_per_minute)
            task = asyncio.get_running_loop().create_task(
                self._check_secret(parsed[0], parsed[1], digest, snapshot, buckets, stamp)
            )
            check = self._inflight[digest] = _Check(task)
            task.add_done_callback(lambda _: self._inflight.pop(digest, None))
        check.waiters += 1
        try:
            # Shielded: one caller giving up must not cancel the check the others await...
            hit = await asyncio.shield(check.task)
        except asyncio.CancelledError:
            # ...but when every caller has gone, nobody needs the answer.
            check.waiters -= 1
            if check.waiters == 0:
                check.task.cancel()
            raise
        check.waiters -= 1
        if hit is None:
            raise AuthenticationFailed(_WRONG_KEY)
        return hit

    async def _check_secret(
        self, lookup_id: str, secret: str, digest: bytes, snapshot: Snapshot,
        buckets: tuple[str, ...], stamp: float,
    ) -> tuple[int, int] | None:
        generation = self._generation
        found = await self._db.read(lambda conn: key_store.secret_by_lookup(conn, lookup_id))
        # An unknown lookup id costs what a known one does, so timing does not tell them apart.
        secret_hash = found[2] if found is not None else await self._hasher.dummy_hash(
            snapshot.auth.bcrypt_rounds
        )

        def start():
            self.bcrypt_verifications += 1
            return self._hasher.submit_verify(secret.encode("ascii"), secret_hash)

        try:
            matched = await self._gate.run(start, queue=snapshot.auth.key_check_queue)
        except RateLimited:
            self._throttle.refund(buckets, stamp)  # refused unchecked: nothing was tried
            raise
        if found is None or not matched:
            self._rejected[digest] = None
            if len(self._rejected) > self._rejected_cache_size:
                self._rejected.popitem(last=False)
            log.info("rejected an API key with lookup id %s: %s", lookup_id,
                     "wrong secret" if found is not None else "unknown lookup id")
            return None
        self._throttle.refund(buckets, stamp)
        secret_id, key_id, _ = found
        self._verified[digest] = (key_id, secret_id)
        if len(self._verified) > snapshot.auth.key_cache_size:
            self._verified.popitem(last=False)
        if generation == self._generation:
            # Warm the records now so the callers waiting on this check need no read.
            try:
                await self._load(key_id, snapshot)
            except AuthenticationFailed:
                pass
        return key_id, secret_id

    async def _load(self, key_id: int, snapshot: Snapshot) -> tuple[_Entry, User]:
        generation = self._generation
        now = self._clock()
        state = await self._db.read(lambda conn: key_store.auth_state(conn, key_id, now))
        if state is None or state.user is None:
            raise AuthenticationFailed(_WRONG_KEY)
        entry = _Entry(state)
        if generation == self._generation:
            limit = snapshot.auth.key_cache_size
            _bounded_put(self._keys, key_id, entry, limit)
            _bounded_put(self._users, state.user.id, state.user, limit)
        return entry, state.user

    # -- invalidation ----------------------------------------------------------------

    def forget_key(self, key_id: int) -> None:
        """The key changed in the store: re-read it on its next request (no bcrypt)."""
        self._generation += 1
        self._keys.pop(key_id, None)

    def forget_user(self, user_id: int) -> None:
        self._generation += 1
        self._users.pop(user_id, None)

    async def poll_changes(self) -> int:
        """Apply changes other processes logged since the last poll; returns how many."""
        seq = self._event_seq
        events = await self._db.read(lambda conn: events_after(conn, seq))
        for seq, kind, ref_id in events:
            if kind == "key":
                self.forget_key(ref_id)
            else:
                self.forget_user(ref_id)
            self._event_seq = seq
        return len(events)

    # -- last used, written in batches -------------------------------------------------

    def last_used(self, key_id: int) -> float | None:
        """When this process last admitted the key, if not yet written."""
        return self._last_used.get(key_id)

    async def flush_last_used(self) -> None:
        if not self._last_used:
            return
        batch, self._last_used = self._last_used, {}
        await self._db.write(lambda conn: key_store.record_last_used(conn, batch))

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self, db: Database | None = None) -> None:
        """Begin polling the change log and flushing last-used times. The store
        may be handed over here, since the app opens it in its own context."""
        if db is not None:
            self._db = db
        self._event_seq = await self._db.read(last_event_seq)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        for check in list(self._inflight.values()):
            check.task.cancel()
        pending = len(self._last_used)
        try:
            await self.flush_last_used()
        except Exception as exc:  # noqa: BLE001 - a lost database must not stop the shutdown
            # Last-used times are a hint for the dashboard, not an account: the
            # gateway stops without them rather than fail its shutdown.
            log.warning("the last-used times of %d API keys were not saved at shutdown: %s", pending, exc)

    async def _run(self) -> None:
        since_flush = 0.0
        while True:
            await asyncio.sleep(self._poll_interval)
            since_flush += self._poll_interval
            try:
                await self.poll_changes()
                if since_flush >= self._flush_interval:
                    since_flush = 0.0
                    await self.flush_last_used()
            except Exception:
                log.exception("API key cache maintenance failed; retrying in %ss", self._poll_interval)


def _bounded_put(table: dict, key: object, value: object, limit: int) -> None:
    table.pop(key, None)
    table[key] = value
    while len(table) > limit:
        del table[next(iter(table))]


