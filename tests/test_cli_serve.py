"""`serve` and `demo` on a busy port or an unusable database: one line naming it, exit 1, no traceback."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from proxy.cli import main
from proxy.cli.options import PortInUse, serving

CONFIG = "models:\n  m1: {pricing: {input: 1, output: 1}}\nupstreams:\n  - name: a\n    url: http://127.0.0.1:9\n" \
         "    models: [m1]\ndatabase:\n  path: {db}\n"


@contextlib.contextmanager
def listening() -> Iterator[int]:
    """A port something listens on for the duration."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def config(tmp_path: Path, db: str = "gateway.db") -> str:
    path = tmp_path / "gateway.yaml"
    path.write_text(CONFIG.replace("{db}", db))
    return str(path)


def busy(port: int, flag: str) -> str:
    return f"Error: port {port} on 127.0.0.1 is already in use; stop what listens there or choose another port with {flag}"


def test_serve_on_a_busy_port_prints_one_line(tmp_path: Path) -> None:
    with listening() as port:
        # A real process: what an operator sees is the whole of stderr.
        result = subprocess.run([sys.executable, "-m", "proxy", "serve", "--config", config(tmp_path),
                                 "--port", str(port)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [busy(port, "--port")]


def test_demo_on_a_busy_port_names_the_port_flag(tmp_path: Path) -> None:
    with listening() as port:
        result = CliRunner().invoke(main, ["demo", "--port", str(port)])
    assert result.exit_code == 1
    assert result.output.splitlines() == [busy(port, "--port")]


def test_demo_on_a_busy_upstream_port_names_the_upstream_flag() -> None:
    with listening() as gateway:
        pass  # free again: only the upstream's port is busy
    with listening() as first:
        result = CliRunner().invoke(main, ["demo", "--port", str(gateway), "--upstream-port", str(first)])
    assert result.exit_code == 1
    assert result.output.splitlines() == [busy(first, "--upstream-port")]


def test_upstream_port_is_for_the_bundled_config_only(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["demo", "--config", config(tmp_path), "--upstream-port", "9000"])
    assert result.exit_code == 2
    assert "--upstream-port applies to the bundled config" in result.output


async def test_a_bind_that_fails_after_the_check_is_the_same_line() -> None:
    with listening() as port:
        with pytest.raises(PortInUse) as caught:
            await serving(asyncio.start_server(lambda r, w: None, "127.0.0.1", port), "127.0.0.1", port, "--port")
    assert caught.value.format_message() == busy(port, "--port")[len("Error: "):]


@pytest.mark.sqlite_only("an unusable path for the SQLite file; on PostgreSQL the path names only spill files")
def test_serve_with_an_unusable_database_path_prints_one_line(tmp_path: Path) -> None:
    (tmp_path / "not-a-folder").write_text("")
    db = os.path.join(str(tmp_path), "not-a-folder", "gateway.db")
    with listening() as port:
        pass  # a port that was free a moment ago
    result = CliRunner().invoke(main, ["serve", "--config", config(tmp_path, db), "--port", str(port)])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"Error: cannot open the database {db}: [Errno 17] File exists: '{os.path.dirname(db)}'"]


def test_a_directory_as_database_path_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    result = CliRunner().invoke(main, ["serve", "--config", config(tmp_path, "data")])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"{tmp_path / 'gateway.yaml'}:8: database.path: {tmp_path / 'data'} is a directory; name the database "
        f"file in it, such as {tmp_path / 'data' / 'bluesminds.db'}"]


def test_config_path_from_the_environment_is_read_when_the_command_runs(tmp_path: Path) -> None:
    path = config(tmp_path)
    result = CliRunner(env={"BLUESMINDS_CONFIG": path}).invoke(main, ["check-config"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"{path}: OK (1 upstreams, 1 models, 1 plans, digest ")


def test_check_config_checks_the_bundled_demo_config() -> None:
    result = CliRunner().invoke(main, ["check-config", "--demo"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"{Path(__file__).parent.parent / 'proxy' / 'cli' / 'demo.yaml'}: OK "
                                    "(2 upstreams, 3 models, 2 plans, digest ")
