"""`bluesminds users …` and `bluesminds keys …` through click's CliRunner, on a real database."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from proxy.auth.authenticator import Authenticator
from proxy.auth.keys import parse_key
from proxy.auth.passwords import Hasher
from proxy.cli.accounts import create_user_and_key, keys, users
from proxy.errors import AuthenticationFailed

from .db_access import query, store_at
from .test_auth_support import PASSWORD, FakeClock, make_snapshot

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def snapshot(tmp_path):
    return make_snapshot(str(tmp_path / "cli.db"))


@pytest.fixture
def cli(snapshot):
    clock = FakeClock()
    runner = CliRunner()

    def run(group, *args, input=None):
        result = runner.invoke(group, [*args, "--config", "unused"], input=input,
                               obj={"load_config": lambda path: snapshot, "clock": clock})
        return result

    run.clock = clock
    return run


def ok(result):
    assert result.exit_code == 0, result.output
    return result


async def authenticate(snapshot, clock, key):
    db = store_at(snapshot.database.path)
    await db.open()
    authenticator = Authenticator(Hasher(), db=db, clock=clock)
    try:
        return await authenticator.authenticate(f"Bearer {key}", snapshot)
    finally:
        await db.close()


def test_users_create_list_set_plan_disable(cli):
    result = ok(cli(users, "create", "Ada@Example.com", "--password", PASSWORD, "--name", "Ada"))
    assert result.output == "created user 1 <ada@example.com> plan=free role=user\n"
    ok(cli(users, "create", "root@example.com", "--password", PASSWORD, "--admin", "--plan", "pro"))
    assert ok(cli(users, "list")).output == (
        "1\tada@example.com\tplan=free\trole=user\n2\troot@example.com\tplan=pro\trole=admin\n"
    )
    assert ok(cli(users, "set-plan", "ada@example.com", "pro")).output == (
        "user 1 <ada@example.com> is now on plan pro\n"
    )
    assert ok(cli(users, "disable", "1")).output == "user 1 <ada@example.com> disabled\n"
    assert '"disabled":true' in ok(cli(users, "list", "--json")).output.splitlines()[0]
    assert ok(cli(users, "disable", "1", "--enable")).output == "user 1 <ada@example.com> enabled\n"


def test_users_create_prompts_for_the_password(cli):
    result = ok(cli(users, "create", "p@example.com", input=f"{PASSWORD}\n{PASSWORD}\n"))
    assert PASSWORD not in result.output


def test_users_errors(cli):
    ok(cli(users, "create", "a@example.com", "--password", PASSWORD))
    result = cli(users, "create", "A@example.com", "--password", PASSWORD)
    assert result.exit_code == 1
    assert "already exists" in result.output
    result = cli(users, "create", "b@example.com", "--password", "short")
    assert (result.exit_code, "at least 10 characters" in result.output) == (1, True)
    result = cli(users, "create", "c@example.com", "--password", "x" * 73)
    assert (result.exit_code, "72 bytes" in result.output) == (1, True)
    result = cli(users, "set-plan", "a@example.com", "gold")
    assert (result.exit_code, "Unknown plan 'gold'; plans: free, pro." in result.output) == (1, True)
    result = cli(users, "disable", "nobody@example.com")
    assert (result.exit_code, "No user 'nobody@example.com'" in result.output) == (1, True)


async def test_keys_create_prints_the_key_once_and_it_works(cli, snapshot):
    ok(cli(users, "create", "k@example.com", "--password", PASSWORD))
    result = ok(cli(keys, "create", "k@example.com", "--name", "ci", "--scope", "chat", "--model", "mini",
                    "--expires-in", "30d"))
    key = result.stdout.strip()
    assert parse_key(key) is not None
    assert "shown only now" in result.stderr
    principal = await authenticate(snapshot, cli.clock, key)
    assert (principal.scopes, principal.models) == (frozenset({"chat"}), ("gpt-4o-mini",))
    listing = ok(cli(keys, "list")).output
    assert key not in listing and key[:15] in listing
    assert '"expires_at":%d' % int(cli.clock.now + 30 * 86400) in ok(cli(keys, "list", "--json")).output


def test_keys_create_is_held_to_the_plan(cli):
    ok(cli(users, "create", "k@example.com", "--password", PASSWORD))
    result = cli(keys, "create", "k@example.com", "--model", "gpt-4o")
    assert result.exit_code == 1
    assert "not included in plan 'free'" in result.output


async def test_keys_revoke_and_rotate(cli, snapshot):
    ok(cli(users, "create", "k@example.com", "--password", PASSWORD))
    first = ok(cli(keys, "create", "1")).stdout.strip()
    rotated = ok(cli(keys, "rotate", "1", "--overlap", "1h")).stdout.strip()
    assert rotated != first
    assert (await authenticate(snapshot, cli.clock, first)).key_id == 1
    cli.clock.advance(3600)
    with pytest.raises(AuthenticationFailed):
        await authenticate(snapshot, cli.clock, first)
    assert (await authenticate(snapshot, cli.clock, rotated)).key_id == 1
    assert ok(cli(keys, "revoke", "1")).output == "key 1 'default' revoked\n"
    with pytest.raises(AuthenticationFailed):
        await authenticate(snapshot, cli.clock, rotated)
    result = cli(keys, "rotate", "1")
    assert (result.exit_code, "is revoked" in result.output) == (1, True)
    result = cli(keys, "rotate", "7")
    assert (result.exit_code, "No API key with id 7" in result.output) == (1, True)
    result = cli(keys, "rotate", "1", "--overlap", "2d")
    assert result.exit_code == 2 and "--overlap" in result.output


async def test_create_user_and_key(tmp_path, snapshot):
    path = snapshot.database
    user_id, key = create_user_and_key(path, "Demo@Example.com", "demo", "pro", "demo", bcrypt_rounds=4)
    again, second = create_user_and_key(path, "demo@example.com", "demo", "pro", "demo", bcrypt_rounds=4)
    assert again == user_id and second != key
    principal = await authenticate(snapshot, FakeClock(), key)
    assert (principal.user_id, principal.plan) == (user_id, "pro")


def test_with_the_real_config_loader(tmp_path):
    config = tmp_path / "config"
    shutil.copytree(ROOT / "config", config)
    gateway = config / "gateway.yaml"
    text = gateway.read_text().replace("bcrypt_rounds: 12", "bcrypt_rounds: 4")
    gateway.write_text(text)
    runner = CliRunner()
    result = runner.invoke(users, ["create", "real@example.com", "--password", PASSWORD,
                                   "--config", str(config)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(keys, ["create", "real@example.com", "--config", str(config)])
    assert result.exit_code == 0, result.output
    # The config's relative path is the database (on the PostgreSQL pass, the test's database).
    assert query(str(tmp_path / "data" / "bluesminds.db"), "SELECT email FROM users") == [("real@example.com",)]


async def test_keys_create_with_user_and_limits_options(cli, snapshot):
    ok(cli(users, "create", "lim@example.com", "--password", PASSWORD))
    result = ok(cli(keys, "create", "--user", "LIM@example.com", "--name", "capped",
                    "--limits", "rpm=30, tpm=5000,monthly_budget_usd=2.5"))
    key = result.stdout.strip()
    principal = await authenticate(snapshot, cli.clock, key)
    assert (principal.user_id, principal.limits.rpm, principal.limits.tpm,
            principal.limits.monthly_budget_usd) == (1, 30, 5000, 2.5)
    listed = ok(cli(keys, "list", "--json")).output
    assert '"limits":{"rpm":30,"tpm":5000,"monthly_budget_usd":2.5}' in listed


@pytest.mark.parametrize("limits, message", [
    ("rpm", "'rpm' is not NAME=VALUE, e.g. rpm=60."),
    ("burst=5", "unknown limit 'burst'; known: rpm, tpm,"),
    ("rpm=fast", "rpm='fast' is not a whole number."),
    ("rpm=1,rpm=2", "'rpm' is given twice."),
    (",", "give at least one NAME=VALUE pair"),
])
def test_keys_create_refuses_bad_limits(cli, limits, message):
    ok(cli(users, "create", "bad@example.com", "--password", PASSWORD))
    result = cli(keys, "create", "--user", "1", "--limits", limits)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_keys_create_limits_are_held_to_the_plan_and_bounds(cli):
    ok(cli(users, "create", "plan@example.com", "--password", PASSWORD))
    result = cli(keys, "create", "--user", "1", "--limits", "rpm=61")
    assert (result.exit_code, "limits.rpm is 61, above the 60 of plan 'free'" in result.output) == (1, True)
    result = cli(keys, "create", "--user", "1", "--limits", "tpm=0")
    assert (result.exit_code, "Field 'limits.tpm' must be at least 1." in result.output) == (1, True)
    result = cli(keys, "create", "--user", "1", "--expires-in", "100000000d")
    assert result.exit_code == 1
    assert "must be at most 253402300799" in result.output


def test_keys_create_needs_one_owner(cli):
    ok(cli(users, "create", "one@example.com", "--password", PASSWORD))
    result = cli(keys, "create")
    assert (result.exit_code, "Name the key's owner: USER or --user" in result.output) == (2, True)
    result = cli(keys, "create", "1", "--user", "2")
    assert (result.exit_code, "Name the owner once: either USER or --user." in result.output) == (2, True)
    result = cli(keys, "create", "--help")
    assert "--limits NAME=VALUE,..." in result.output
    assert "rpm=60,tpm=100000" in result.output
