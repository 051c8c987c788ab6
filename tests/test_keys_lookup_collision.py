"""A new key whose random lookup id is already taken draws another, in the same
transaction, on either store (on PostgreSQL a failed INSERT would abort it)."""

from __future__ import annotations

import secrets

import pytest

from proxy.auth import keys as key_store
from proxy.auth.users import insert_user
from proxy.errors import Conflict

from .db_access import opened


def _draws(monkeypatch, ids: list[str]) -> None:
    """The next lookup ids drawn (6 random bytes); other random draws stay random."""
    pending = iter(ids)
    real = secrets.token_hex
    monkeypatch.setattr(key_store.secrets, "token_hex", lambda n=None: next(pending) if n == 6 else real(n))


def _new_key(conn, user_id: int) -> tuple[key_store.ApiKey, str]:
    return key_store.insert_key(conn, user_id=user_id, columns={"name": "k"}, secret="s" * 43,
                                secret_hash="unused", now=100.0)


def test_a_taken_lookup_id_is_drawn_again_and_the_key_is_created(tmp_path, monkeypatch):
    with opened(str(tmp_path / "keys.db")) as store:
        user = store.write_sync(lambda conn: insert_user(conn, email="a@example.com", password_hash="x",
                                                         plan="free", now=100.0))
        _draws(monkeypatch, ["aaaaaaaaaaaa", "aaaaaaaaaaaa", "bbbbbbbbbbbb"])
        _, first = store.write_sync(lambda conn: _new_key(conn, user.id))
        key, second = store.write_sync(lambda conn: _new_key(conn, user.id))
        assert first == "bm-aaaaaaaaaaaa_" + "s" * 43
        assert second == "bm-bbbbbbbbbbbb_" + "s" * 43
        assert key.lookup_id == "bbbbbbbbbbbb"
        assert store.read_sync(lambda conn: [tuple(r) for r in conn.execute(
            "SELECT key_id, lookup_id FROM api_key_secrets ORDER BY key_id").fetchall()]) == [
            (1, "aaaaaaaaaaaa"), (2, "bbbbbbbbbbbb")]


def test_five_taken_draws_in_a_row_give_up_with_a_conflict(tmp_path, monkeypatch):
    with opened(str(tmp_path / "keys.db")) as store:
        user = store.write_sync(lambda conn: insert_user(conn, email="a@example.com", password_hash="x",
                                                         plan="free", now=100.0))
        _draws(monkeypatch, ["aaaaaaaaaaaa"] * 6)
        store.write_sync(lambda conn: _new_key(conn, user.id))
        with pytest.raises(Conflict, match="Could not allocate a key id"):
            store.write_sync(lambda conn: _new_key(conn, user.id))
        # The failed key rolled back with its transaction: one key, one secret.
        assert store.read_sync(lambda conn: conn.execute("SELECT COUNT(*) FROM api_keys").fetchone()[0]) == 1
