"""A key made with the default scopes can use every route family, including
families added after it was made; a key made with chosen scopes keeps them."""

from __future__ import annotations

import sqlite3

import sqlite_utils

from proxy.auth.principal import SCOPES
from proxy.auth.tables import _all_scopes
from proxy.cli.accounts import create_user_and_key


def _stored_scopes(path: str) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [row[0] for row in conn.execute("SELECT scopes FROM api_keys ORDER BY id")]


def test_a_default_key_stores_every_scope_not_the_list_of_the_day(tmp_path):
    path = str(tmp_path / "gw.db")
    create_user_and_key(path, "t@example.com", "correct horse battery", "free", "k", bcrypt_rounds=4)
    assert _stored_scopes(path) == ['["*"]']


def test_keys_with_the_old_default_list_are_opened_to_every_family(tmp_path):
    db = sqlite_utils.Database(str(tmp_path / "old.db"))
    db.execute("CREATE TABLE api_keys (id INTEGER PRIMARY KEY, scopes TEXT NOT NULL)")
    db.execute("""INSERT INTO api_keys (scopes) VALUES
                  ('["chat","completions","embeddings","models"]'), ('["chat"]'), ('["embeddings","models"]')""")
    _all_scopes(db)
    assert [r[0] for r in db.execute("SELECT scopes FROM api_keys ORDER BY id").fetchall()] == [
        '["*"]', '["chat"]', '["embeddings","models"]']


def test_every_scope_is_what_the_star_means():
    from proxy.auth.keys import _scopes

    assert _scopes(["*"]) == SCOPES
    assert _scopes(["chat"]) == ("chat",)
