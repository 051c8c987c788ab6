"""`bluesminds backup PATH`: an online copy of the live database, WAL included, never over a file."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from proxy.cli import main
from proxy.store import Database

# `bluesminds backup` copies the SQLite file (PostgreSQL has pg_dump for that).
pytestmark = pytest.mark.sqlite_only("the SQLite backup CLI")

ROOT = Path(__file__).resolve().parent.parent


def _config(tmp_path: Path) -> tuple[Path, Path]:
    config = tmp_path / "config"
    shutil.copytree(ROOT / "config", config)
    return config, tmp_path / "data" / "bluesminds.db"


def test_backup_copies_what_is_still_in_the_wal_while_the_database_is_open(tmp_path):
    config, path = _config(tmp_path)
    path.parent.mkdir()
    db = Database(str(path))
    db.open_sync()
    try:
        def write(conn: sqlite3.Connection) -> None:
            # No checkpoint: the rows stay in the WAL, where a plain copy of the file misses them.
            conn.execute("PRAGMA wal_autocheckpoint=0")
            conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
            conn.executemany("INSERT INTO notes (body) VALUES (?)", [(f"row {i}",) for i in range(1000)])
        db.write_sync(write)
        plain = tmp_path / "plain.db"
        shutil.copy(path, plain)
        with sqlite3.connect(plain) as conn:
            assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'notes'").fetchone() == (0,)

        target = tmp_path / "backup.db"
        result = CliRunner().invoke(main, ["backup", str(target), "--config", str(config)])
        assert result.exit_code == 0, result.output
        assert result.output.startswith(f"backed up {path} to {target}: ")
        assert result.output.endswith(" bytes, integrity ok\n")
        assert not Path(str(target) + ".partial").exists()
        assert not Path(str(target) + "-wal").exists()  # one self-contained file
        with sqlite3.connect(target) as conn:
            assert conn.execute("SELECT count(*), max(body) FROM notes").fetchone() == (1000, "row 999")
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"users", "api_keys", "notes"} <= tables, tables
        # The gateway's writer is not disturbed: it goes on writing after the backup.
        db.write_sync(lambda conn: conn.execute("INSERT INTO notes (body) VALUES ('after')"))
    finally:
        db.close_sync()


def test_backup_never_overwrites_and_says_why_it_cannot_run(tmp_path):
    config, path = _config(tmp_path)
    runner = CliRunner()
    missing = runner.invoke(main, ["backup", str(tmp_path / "b.db"), "--config", str(config)])
    assert missing.exit_code == 1
    assert f"Error: the database {path} does not exist" in missing.output

    path.parent.mkdir()
    db = Database(str(path))
    db.open_sync()
    db.close_sync()
    existing = tmp_path / "b.db"
    existing.write_text("keep me")
    refused = runner.invoke(main, ["backup", str(existing), "--config", str(config)])
    assert refused.exit_code == 2
    assert f"{existing} already exists; a backup never overwrites a file" in refused.output
    assert existing.read_text() == "keep me"
    itself = runner.invoke(main, ["backup", str(path), "--config", str(config)])
    assert itself.exit_code == 2
    assert f"{path} already exists" in itself.output
