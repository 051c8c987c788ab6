"""`bluesminds usage` against a real config file and database."""

from __future__ import annotations

from datetime import datetime, timezone

import orjson
import pytest
from click.testing import CliRunner

import proxy.auth.tables  # noqa: F401  (registers the users table, for e-mails in the report)
from proxy.auth.users import insert_user
from proxy.cli.usage import usage
from proxy.usage import UsageRecord, write_batch

from .db_access import opened

TODAY = datetime(2025, 11, 26, 9, 0, tzinfo=timezone.utc).timestamp()
DAY = 86400.0


def row(ts: float, user: int, model: str, tokens: int, cost: float) -> UsageRecord:
    return UsageRecord(ts=ts, request_id="r", user_id=user, key_id=None, route="chat",
                       requested_model=model, served_model=model, upstream="a", status=200,
                       error_type=None, prompt_tokens=tokens, completion_tokens=0,
                       total_tokens=tokens, cost_nano=round(cost * 1e9), latency_ms=100.0)


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "gateway.yaml"
    path.write_text("database:\n  path: usage.db\n")
    def seed(conn):
        insert_user(conn, email="ann@example.com", password_hash="unused", plan="free", now=TODAY)
        write_batch(conn, [
            row(TODAY, 1, "gpt-4o", 1000, 0.25),
            row(TODAY + 60, 1, "gpt-4o", 500, 0.125),
            row(TODAY - 3 * DAY, 1, "gpt-4o", 2000, 0.5),  # earlier this month
            row(TODAY - 30 * DAY, 1, "gpt-4o", 9999, 9.0),  # last month: not shown
            row(TODAY + DAY, 1, "gpt-4o", 7777, 7.0),  # after the reported day: not shown
            row(TODAY, 2, "embed-3", 300, 0.001),
        ])

    with opened(str(tmp_path / "usage.db")) as db:
        db.write_sync(seed)
    return str(path)


def test_table_per_user_and_model_for_the_day_and_month(config):
    result = CliRunner().invoke(usage, ["--config", config, "--date", "2025-11-26"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("Usage on 2025-11-26 and in 2025-11 up to that day (UTC)")
    assert lines[1].split() == ["user", "model", "req", "today", "tokens", "today", "cost", "today",
                                "req", "month", "tokens", "month", "cost", "month"]
    assert lines[3].split() == ["ann@example.com", "gpt-4o", "2", "1,500", "$0.3750", "3", "3,500", "$0.8750"]
    assert lines[4].split() == ["#2", "embed-3", "1", "300", "$0.0010", "1", "300", "$0.0010"]
    assert lines[6].split() == ["TOTAL", "3", "1,800", "$0.3760", "4", "3,800", "$0.8760"]


def test_json_output(config):
    result = CliRunner().invoke(usage, ["--config", config, "--date", "2025-11-26", "--json"])
    assert result.exit_code == 0, result.output
    body = orjson.loads(result.output)
    assert (body["day"], body["month"]) == ("2025-11-26", "2025-11")
    first = body["data"][0]
    assert (first["email"], first["model"], first["requests_day"], first["tokens_month"]) == (
        "ann@example.com", "gpt-4o", 2, 3500)


def test_a_day_without_usage_in_its_month(config):
    result = CliRunner().invoke(usage, ["--config", config, "--date", "2024-02-10"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "No usage in this month."


@pytest.mark.sqlite_only("a missing SQLite file is reported, not created")
def test_a_missing_database_is_reported_not_created(tmp_path):
    path = tmp_path / "gateway.yaml"
    path.write_text("database:\n  path: nowhere.db\n")
    result = CliRunner().invoke(usage, ["--config", str(path)])
    assert result.exit_code == 0, result.output
    assert "does not exist" in result.output
    assert not (tmp_path / "nowhere.db").exists()


def test_a_bad_date_is_refused(config):
    result = CliRunner().invoke(usage, ["--config", config, "--date", "26/11/2025"])
    assert result.exit_code == 2
    assert "--date" in result.output and "is not a date" in result.output


def test_a_bad_config_exits_1(tmp_path):
    path = tmp_path / "gateway.yaml"
    path.write_text("database:\n  flush_rows: many\n")
    result = CliRunner().invoke(usage, ["--config", str(path)])
    assert result.exit_code == 1
    assert "flush_rows" in result.output
