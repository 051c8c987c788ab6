"""Upstream URLs are parsed at load: an unusable one is a config error, a trailing /v1 is dropped."""

from __future__ import annotations

import logging

import aiohttp
import pytest
from click.testing import CliRunner

from proxy.cli import main
from proxy.config import load_config
from proxy.config.urls import BadURL, normalise_upstream_url

from .gateway_harness import GatewayHarness, upstream_entry

ADMIN_ENV = "BLUESMINDS_TEST_ADMIN_KEY"
ADMIN_KEY = "admin-key-for-url-tests-0123456789"


@pytest.mark.parametrize("url, message", [
    ("http://127.0.0.1:99999", "'http://127.0.0.1:99999' is not a usable URL: Port out of range 0-65535"),
    ("http://[::1", "'http://[::1' is not a usable URL: Invalid IPv6 URL"),
    ("http://h:port", "'http://h:port' is not a usable URL: Port could not be cast to integer value as 'port'"),
    ("http://h:0", "'http://h:0' is not a usable URL: port 0 cannot be connected to"),
    ("http://:80", "'http://:80' is not a usable URL: it names no host"),
    ("http://user:sk-secret@h", "the URL holds credentials (user:password@); secrets do not go in YAML: "
                                "name an environment variable in api_key_env"),
])
def test_unusable_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(BadURL) as caught:
        normalise_upstream_url(url)
    assert str(caught.value) == message


@pytest.mark.parametrize("url, clean, stripped", [
    ("http://10.0.0.5:4000", "http://10.0.0.5:4000", False),
    ("http://10.0.0.5:4000/", "http://10.0.0.5:4000", False),
    ("http://10.0.0.5:4000/v1", "http://10.0.0.5:4000", True),
    ("http://10.0.0.5:4000/v1/", "http://10.0.0.5:4000", True),
    ("https://gw.example.com/litellm/v1", "https://gw.example.com/litellm", True),
    ("http://v1", "http://v1", False),  # a host named v1 is not a path
    ("http://[::1]:4000", "http://[::1]:4000", False),
])
def test_usable_urls_are_normalised(url: str, clean: str, stripped: bool) -> None:
    assert normalise_upstream_url(url) == (clean, stripped)


def test_trailing_v1_is_stripped_with_a_warning(tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("models:\n  m1: {pricing: {input: 1, output: 1}}\n"
                      "upstreams:\n  - name: a\n    url: http://127.0.0.1:4000/v1\n    models: [m1]\n")
    with caplog.at_level(logging.WARNING, logger="bluesminds.config"):
        snapshot = load_config(str(config))
    assert snapshot.upstreams[0].url == "http://127.0.0.1:4000"
    note = ("upstream 'a': url 'http://127.0.0.1:4000/v1' ends in /v1, which the gateway adds itself; "
            "using 'http://127.0.0.1:4000'")
    assert note in caplog.text
    result = CliRunner().invoke(main, ["check-config", str(config)])
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [f"warning: {note}"]


@pytest.fixture
async def harness(tmp_path, upstreams, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(ADMIN_ENV, ADMIN_KEY)
    gateway = GatewayHarness.write(str(tmp_path / "config"), [upstream_entry("a", upstreams[0].url)],
                                   admin={"key_env": ADMIN_ENV})
    await gateway.start()
    yield gateway
    await gateway.stop()


@pytest.mark.parametrize("url, reason", [
    ("http://127.0.0.1:99999", "Port out of range 0-65535"),
    ("http://[::1", "Invalid IPv6 URL"),
])
async def test_admin_api_refuses_an_unusable_url(harness: GatewayHarness, url: str, reason: str) -> None:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as session:
        async with session.post(f"{harness.url}/api/admin/servers",
                                json={"name": "bad", "url": url, "models": "*"}) as resp:
            body = await resp.json()
            assert resp.status == 400, body
        async with session.get(f"{harness.url}/api/admin/servers") as resp:
            names = [s["name"] for s in (await resp.json())["data"]]
    assert body["error"] == {"message": f"url: {url!r} is not a usable URL: {reason}", "type": "invalid_request_error",
                             "param": "url", "code": "invalid_url"}
    assert names == ["a"]
