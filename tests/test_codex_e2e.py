"""Codex CLI (`codex exec`) through the gateway to the fake upstream, with a custom
provider whose base URL is the gateway: Codex speaks nothing but the Responses API."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil

import pytest

from proxy.appkeys import STORE, USAGE

from .gateway_harness import GatewayHarness, upstream_entry

CODEX_TIMEOUT = 90.0


def find_codex() -> str | None:
    """Where scripts/install-codex puts it, then PATH."""
    folder = os.environ.get("BLUESMINDS_CODEX_DIR", "/opt/bluesminds-codex")
    candidate = os.path.join(folder, "node_modules", ".bin", "codex")
    if os.access(candidate, os.X_OK):
        return candidate
    return shutil.which("codex")


CODEX = find_codex()
pytestmark = pytest.mark.skipif(
    CODEX is None, reason="Codex CLI not found: run scripts/install-codex (needs npm) or put `codex` on PATH")


@pytest.fixture
async def gateway(tmp_path, upstreams):
    harness = GatewayHarness.write(str(tmp_path / "config"), [upstream_entry("a", upstreams[0].url)],
                                   server={"access_log": True})
    await harness.start()
    yield harness
    await harness.stop()


@pytest.mark.timeout(150)
async def test_codex_exec_through_the_gateway(gateway, upstreams, tmp_path, caplog):
    home = tmp_path / "codex-home"
    work = tmp_path / "work"
    home.mkdir()
    work.mkdir()
    provider = (f'model_providers.bm={{name="bm", base_url="{gateway.url}/v1", env_key="BM_KEY", '
                'wire_api="responses"}')
    env = {**os.environ, "CODEX_HOME": str(home), "BM_KEY": gateway.key}
    caplog.set_level(logging.INFO, logger="bluesminds.access")
    process = await asyncio.create_subprocess_exec(
        CODEX, "exec", "--skip-git-repo-check", "-m", "gpt-4o-mini", "-c", "model_provider=bm", "-c", provider,
        "say hello", cwd=str(work), env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(process.communicate(), CODEX_TIMEOUT)
    except asyncio.TimeoutError:
        process.kill()
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()[-3000:]
    assert out.decode().strip() == "a says hello from the"
    assert upstreams[0].stats()["by_path"] == {"/v1/responses": 1}
    sent = upstreams[0].stats()["last_body"]
    assert sent["stream"] is True and sent["model"] == "gpt-4o-mini"
    await gateway.app[USAGE].flush()
    rows = await gateway.app[STORE].read(lambda conn: [tuple(r) for r in conn.execute(
        "SELECT route, status, partial FROM usage")])
    assert rows == [("responses", 200, 0)]
    # Whatever else Codex asks the gateway (its model list, say) is answered, not refused.
    lines = [r.getMessage() for r in caplog.records if r.name == "bluesminds.access"]
    assert lines and not [line for line in lines if " 404 " in line or " 405 " in line], lines
