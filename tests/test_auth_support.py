"""Fixtures shared by the tenant tests: a bare app with only the auth feature,
a real SQLite file in tmp_path, an injected clock and a fixed config snapshot."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from aiohttp import web

from proxy.app import gateway_middleware
from proxy.appkeys import AUTHENTICATOR, CLOCK, CONFIG, HASHER, STORE
from proxy.auth import setup as setup_auth
from proxy.config.snapshot import (
    AdminSettings,
    AuthSettings,
    HealthSettings,
    ModelConfig,
    PlanConfig,
    RetrySettings,
    ServerSettings,
    Snapshot,
)
from proxy.routes import admin_users, auth_routes, keys_routes
from proxy.store import Database

from .db_access import settings_at, store_at

ADMIN_KEY = "adm-0123456789abcdef-admin-key"
PASSWORD = "correct horse battery"
T0 = 1_700_000_000.0
_emails = itertools.count(1)


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Holder:
    def __init__(self, snapshot: Snapshot) -> None:
        self.current = snapshot


def make_snapshot(db_path: str, **auth: Any) -> Snapshot:
    models = {
        "gpt-4o-mini": ModelConfig("gpt-4o-mini", "gpt-4o-mini", aliases=("mini",)),
        "gpt-4o": ModelConfig("gpt-4o", "gpt-4o"),
        "text-embedding-3-small": ModelConfig("text-embedding-3-small", "text-embedding-3-small"),
    }
    lookup = dict(models)
    lookup["mini"] = models["gpt-4o-mini"]
    # Tests sign up many accounts from 127.0.0.1 (the signup throttle and the invite-only
    # default have tests of their own).
    settings = {"bcrypt_rounds": 4, "password_min_length": 10, "signups_per_hour": 10_000, "signup": "open",
                **auth}
    return Snapshot(
        server=ServerSettings(),
        database=settings_at(db_path),
        admin=AdminSettings(key_env="BLUESMINDS_ADMIN_KEY", key=ADMIN_KEY),
        auth=AuthSettings(**settings),
        health=HealthSettings(),
        retry=RetrySettings(),
        upstreams=(),
        models=models,
        plans={
            "free": PlanConfig("free", rpm=60, tpm=10_000, monthly_budget_usd=5.0,
                               models=("gpt-4o-mini", "text-embedding-3-small")),
            "pro": PlanConfig("pro", rpm=600),
        },
        model_lookup=lookup,
    )


def build_app(snapshot: Snapshot, clock: FakeClock) -> web.Application:
    # The app's own middleware: its error mapping and its one admin gate.
    app = web.Application(middlewares=[gateway_middleware])
    app[CONFIG] = Holder(snapshot)
    app[CLOCK] = clock
    app[STORE] = store_at(snapshot.database.path)

    async def store(app: web.Application):
        await app[STORE].open()
        yield
        await app[STORE].close()

    app.cleanup_ctx.append(store)
    setup_auth(app)
    auth_routes.setup(app)
    keys_routes.setup(app)
    admin_users.setup(app)
    return app


def new_email() -> str:
    return f"user{next(_emails)}@example.com"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


ADMIN = bearer(ADMIN_KEY)


class Api:
    """Thin helpers over the test client for the calls most tests make."""

    def __init__(self, client) -> None:
        self.client = client
        self.app = client.server.app

    @property
    def db(self) -> Database:
        return self.app[STORE]

    @property
    def authenticator(self):
        return self.app[AUTHENTICATOR]

    @property
    def hasher(self):
        return self.app[HASHER]

    def set_snapshot(self, snapshot: Snapshot) -> None:
        self.app[CONFIG].current = snapshot

    async def signup(self, email: str | None = None, password: str = PASSWORD, **extra) -> dict:
        """Sign up, then log in: the session of the new account."""
        email = email or new_email()
        response = await self.client.post(
            "/api/auth/signup", json={"email": email, "password": password, **extra}
        )
        assert response.status == 202, await response.text()
        response = await self.client.post("/api/auth/login", json={"email": email, "password": password})
        assert response.status == 200, await response.text()
        # Callers choose their credential per request; the jar must not add one.
        self.client.session.cookie_jar.clear()
        return await response.json()

    async def user(self, **extra) -> tuple[dict[str, str], dict]:
        """A signed-up user: (bearer headers, the user object)."""
        session = await self.signup(**extra)
        return bearer(session["token"]), session["user"]

    async def admin_user(self) -> tuple[dict[str, str], dict]:
        headers, user = await self.user()
        response = await self.client.patch(f"/api/admin/users/{user['id']}", json={"role": "admin"},
                                           headers=ADMIN)
        assert response.status == 200, await response.text()
        return headers, await response.json()

    async def create_key(self, headers: dict[str, str], **body) -> dict:
        response = await self.client.post("/api/keys", json={"name": "k", **body}, headers=headers)
        assert response.status == 201, await response.text()
        return await response.json()

    async def authenticate(self, key: str, snapshot: Snapshot | None = None):
        snapshot = snapshot or self.app[CONFIG].current
        return await self.authenticator.authenticate(f"Bearer {key}", snapshot)


async def error_of(response) -> dict:
    body = await response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def snapshot(tmp_path) -> Snapshot:
    return make_snapshot(str(tmp_path / "bluesminds.db"))


@pytest.fixture
async def api(aiohttp_client, snapshot, clock) -> Api:
    client = await aiohttp_client(build_app(snapshot, clock))
    return Api(client)
