"""`bluesminds users …` and `bluesminds keys …`: accounts and keys straight in
the database, so a self-hoster can bootstrap without HTTP.

A running server sees these changes too: revocations, rotations, plan
changes and disables reach its key cache through the change log within a
second.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Any, Callable, Iterator

import click
import orjson

from ..auth import keys as key_store
from ..auth.passwords import check_length_only, check_password, hash_secret
from ..auth.principal import SCOPES
from ..auth.sessions import revoke_user_sessions
from ..auth.users import (
    User, check_plan_name, find_user, insert_user, list_users, normalize_email, plan_for, update_user,
    user_by_email,
)
from ..config.snapshot import Snapshot
from ..config.units import parse_duration
from ..errors import GatewayError
from ..store import Database, open_store
from ..validation import validate


def _load_config(path: str) -> Snapshot:
    from ..config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        raise click.ClickException(f"Config at {path} is invalid:\n{exc}") from None


@dataclasses.dataclass
class _Session:
    snapshot: Snapshot
    db: Database
    now: float


@contextlib.contextmanager
def _open(config_path: str) -> Iterator[_Session]:
    """Config and database for one command; `ctx.obj` may supply `load_config`
    and `clock` (tests do)."""
    obj = click.get_current_context().obj or {}
    loader: Callable[[str], Snapshot] = obj.get("load_config", _load_config)
    clock: Callable[[], float] = obj.get("clock", time.time)
    try:
        snapshot = loader(config_path)
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"Cannot load config from {config_path}: {exc}") from None
    db = open_store(snapshot.database)
    db.open_sync()
    try:
        yield _Session(snapshot, db, clock())
    except GatewayError as exc:
        raise click.ClickException(exc.message) from None
    finally:
        db.close_sync()


def _user(session: _Session, ref: str) -> User:
    user = session.db.read_sync(lambda conn: find_user(conn, ref))
    if user is None:
        raise click.ClickException(f"No user '{ref}'; `bluesminds users list` shows them.")
    return user


config_option = click.option(
    "--config", "config_path", default="config", show_default=True,
    help="Config directory or YAML file; the database path comes from it.",
)


# -- users ---------------------------------------------------------------------------


@click.group()
def users() -> None:
    """Create and manage accounts."""


@users.command("create")
@click.argument("email")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True,
              help="Prompted for when not given (keeps it out of shell history).")
@click.option("--name", default="", help="Display name.")
@click.option("--plan", default=None, help="Plan name from the config; default: auth.default_plan.")
@click.option("--admin", is_flag=True, help="Give the account the admin role.")
@config_option
def users_create(
    email: str, password: str, name: str, plan: str | None, admin: bool, config_path: str
) -> None:
    """Create an account."""
    with _open(config_path) as session:
        settings = session.snapshot.auth
        plan = check_plan_name(session.snapshot, plan or settings.default_plan)
        address = normalize_email(email)
        password_hash = hash_secret(check_password(password, settings), settings.bcrypt_rounds)
        user = session.db.write_sync(
            lambda conn: insert_user(
                conn, email=address, password_hash=password_hash, plan=plan, now=session.now,
                name=name, role="admin" if admin else "user",
            )
        )
    click.echo(f"created user {user.id} <{user.email}> plan={user.plan} role={user.role}")


@users.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@config_option
def users_list(as_json: bool, config_path: str) -> None:
    """List accounts."""
    with _open(config_path) as session:
        found: list[User] = []
        after = 0
        while page := session.db.read_sync(lambda conn: list_users(conn, after=after, limit=1000)):
            found.extend(page)
            after = page[-1].id
    for user in found:
        if as_json:
            click.echo(orjson.dumps(user.public()))
        else:
            flags = " disabled" if user.disabled else ""
            click.echo(f"{user.id}\t{user.email}\tplan={user.plan}\trole={user.role}{flags}")


@users.command("set-plan")
@click.argument("user")
@click.argument("plan")
@config_option
def users_set_plan(user: str, plan: str, config_path: str) -> None:
    """Move USER (id or e-mail) to PLAN."""
    with _open(config_path) as session:
        check_plan_name(session.snapshot, plan)
        target = _user(session, user)
        updated = session.db.write_sync(
            lambda conn: update_user(conn, target.id, {"plan": plan}, session.now)
        )
    click.echo(f"user {updated.id} <{updated.email}> is now on plan {updated.plan}")


@users.command("disable")
@click.argument("user")
@click.option("--enable", is_flag=True, help="Re-enable the account instead.")
@config_option
def users_disable(user: str, enable: bool, config_path: str) -> None:
    """Disable USER (id or e-mail): its sessions end and its keys stop working."""
    with _open(config_path) as session:
        target = _user(session, user)

        def apply(conn):
            updated = update_user(conn, target.id, {"disabled": not enable}, session.now)
            if not enable:
                revoke_user_sessions(conn, target.id, session.now)
            return updated

        updated = session.db.write_sync(apply)
    click.echo(f"user {updated.id} <{updated.email}> {'enabled' if enable else 'disabled'}")


# -- keys ------------------------------------------------------------------------------


@click.group()
def keys() -> None:
    """Create and manage API keys."""


@keys.command("create")
@click.argument("user", required=False)
@click.option("--user", "user_option", default=None, metavar="USER",
              help="The owner, by id or e-mail (the same as the USER argument).")
@click.option("--name", default="default", show_default=True)
@click.option("--scope", "scopes", multiple=True, type=click.Choice(SCOPES),
              help="Repeat for several; default: all scopes.")
@click.option("--model", "models", multiple=True, help="Allow only these models (repeatable).")
@click.option("--limits", "limits_text", default=None, metavar="NAME=VALUE,...",
              help="Per-key limits as comma-separated NAME=VALUE pairs, each at most the plan's, "
                   "e.g. --limits rpm=60,tpm=100000,monthly_budget_usd=5. Names: "
                   + ", ".join(key_store.LIMIT_FIELDS) + ".")
@click.option("--expires-in", default=None, help="Duration such as 30d or 12h; default: never.")
@config_option
def keys_create(user: str | None, user_option: str | None, name: str, scopes: tuple[str, ...],
                models: tuple[str, ...], limits_text: str | None, expires_in: str | None,
                config_path: str) -> None:
    """Create a key for USER (id or e-mail) and print it, once."""
    if user and user_option and user != user_option:
        raise click.UsageError("Name the owner once: either USER or --user.")
    ref = user or user_option
    if not ref:
        raise click.UsageError("Name the key's owner: USER or --user (an id or an e-mail address).")
    limits = _limits(limits_text) if limits_text is not None else None
    with _open(config_path) as session:
        owner = _user(session, ref)
        body: dict[str, Any] = {"name": name}
        if scopes:
            body["scopes"] = list(scopes)
        if models:
            body["models"] = list(models)
        if limits is not None:
            body["limits"] = limits
        if expires_in:
            body["expires_at"] = int(session.now + _duration(expires_in, "--expires-in"))
        validate(body, "key_create")
        columns = key_store.check_settings(
            body, plan=plan_for(session.snapshot, owner.plan), snapshot=session.snapshot, now=session.now
        )
        secret = key_store.new_secret()
        secret_hash = hash_secret(secret.encode("ascii"), session.snapshot.auth.bcrypt_rounds)
        key, text = session.db.write_sync(
            lambda conn: key_store.insert_key(
                conn, user_id=owner.id, columns=columns, secret=secret, secret_hash=secret_hash,
                now=session.now,
            )
        )
    click.echo(f"created key {key.id} '{key.name}' for {owner.email}; it is shown only now:", err=True)
    click.echo(text)


def _limits(text: str) -> dict[str, int | float]:
    """`rpm=60,tpm=1000` -> {"rpm": 60, "tpm": 1000}; the key_limits schema checks the values."""
    limits: dict[str, int | float] = {}
    for pair in filter(None, (part.strip() for part in text.split(","))):
        name, sep, raw = pair.partition("=")
        name, raw = name.strip(), raw.strip()
        if not sep or not name or not raw:
            raise click.BadParameter(f"'{pair}' is not NAME=VALUE, e.g. rpm=60.", param_hint="--limits")
        if name not in key_store.LIMIT_FIELDS:
            raise click.BadParameter(f"unknown limit '{name}'; known: {', '.join(key_store.LIMIT_FIELDS)}.",
                                     param_hint="--limits")
        if name in limits:
            raise click.BadParameter(f"'{name}' is given twice.", param_hint="--limits")
        try:
            limits[name] = float(raw) if name == "monthly_budget_usd" else int(raw)
        except ValueError:
            kind = "a number" if name == "monthly_budget_usd" else "a whole number"
            raise click.BadParameter(f"{name}={raw!r} is not {kind}.", param_hint="--limits") from None
    if not limits:
        raise click.BadParameter("give at least one NAME=VALUE pair, e.g. rpm=60.", param_hint="--limits")
    return limits


@keys.command("list")
@click.option("--user", default=None, help="Only this user's keys (id or e-mail).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@config_option
def keys_list(user: str | None, as_json: bool, config_path: str) -> None:
    """List keys (never their secrets)."""
    with _open(config_path) as session:
        owner = _user(session, user).id if user else None
        found = session.db.read_sync(lambda conn: key_store.list_keys(conn, session.now, user_id=owner))
    for key in found:
        if as_json:
            click.echo(orjson.dumps(key.public()))
        else:
            state = "revoked" if key.revoked_at is not None else "active"
            click.echo(f"{key.id}\tbm-{key.lookup_id}…\tuser={key.user_id}\t{key.name}\t{state}")


@keys.command("revoke")
@click.argument("key_id", type=int)
@config_option
def keys_revoke(key_id: int, config_path: str) -> None:
    """Revoke a key; it stops working at once."""
    with _open(config_path) as session:
        key = session.db.write_sync(lambda conn: key_store.revoke_key(conn, key_id, session.now))
    click.echo(f"key {key.id} '{key.name}' revoked")


@keys.command("rotate")
@click.argument("key_id", type=int)
@click.option("--overlap", default="0s", show_default=True,
              help="How long the old key keeps working, e.g. 1h (at most auth.max_rotation_overlap).")
@config_option
def keys_rotate(key_id: int, overlap: str, config_path: str) -> None:
    """Give a key a new secret and print it, once."""
    with _open(config_path) as session:
        window = _duration(overlap, "--overlap")
        if window > session.snapshot.auth.max_rotation_overlap:
            raise click.BadParameter(
                f"at most {int(session.snapshot.auth.max_rotation_overlap)} seconds", param_hint="--overlap"
            )
        secret = key_store.new_secret()
        secret_hash = hash_secret(secret.encode("ascii"), session.snapshot.auth.bcrypt_rounds)
        key, text = session.db.write_sync(
            lambda conn: key_store.rotate_key(
                conn, key_id, secret=secret, secret_hash=secret_hash, now=session.now, overlap=window
            )
        )
    click.echo(f"rotated key {key.id} '{key.name}'; the new key is shown only now:", err=True)
    click.echo(text)


def _duration(text: str, option: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


# -- for `bluesminds demo` -------------------------------------------------------------


def create_user_and_key(
    db_path: "str | DatabaseSettings",
    email: str,
    password: str,
    plan: str,
    key_name: str,
    *,
    bcrypt_rounds: int = 12,
    clock: Callable[[], float] = time.time,
) -> tuple[int, str]:
    """An account with one all-scopes key; returns (user id, key text).

    If the address already has an account, that account gets the new key and
    keeps its password and plan, so `demo` can run again on the same database.
    Only bcrypt's 72-byte rule is applied to the password, not the configured
    minimum length, since the caller chose it."""
    password_hash = hash_secret(check_length_only(password), bcrypt_rounds)
    secret = key_store.new_secret()
    secret_hash = hash_secret(secret.encode("ascii"), bcrypt_rounds)
    address = normalize_email(email)
    now = clock()

    def create(conn) -> tuple[int, str]:
        user = user_by_email(conn, address) or insert_user(
            conn, email=address, password_hash=password_hash, plan=plan, now=now
        )
        _, text = key_store.insert_key(
            conn, user_id=user.id, columns={"name": key_name}, secret=secret,
            secret_hash=secret_hash, now=now,
        )
        return user.id, text

    # A path is a SQLite file; settings name whichever store the config chose.
    db = Database(db_path) if isinstance(db_path, str) else open_store(db_path)
    db.open_sync()
    try:
        return db.write_sync(create)
    finally:
        db.close_sync()
