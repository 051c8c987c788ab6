"""SSRF: refused at creation in every spelling, and refused again in the connection itself."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from aiohttp.abc import AbstractResolver

from proxy.config.snapshot import WebhookSettings
from proxy.webhooks.delivery import WebhookClient
from proxy.webhooks.ssrf import NetworkPolicy, refusal

from .test_webhooks_support import Receiver, start_gateway


@pytest.fixture
async def receiver():
    r = await Receiver().start()
    yield r
    await r.stop()


class FixedDNS(AbstractResolver):
    """DNS that answers every name with one address (a rebinding attacker's zone)."""

    def __init__(self, address: str) -> None:
        self.address = address

    async def resolve(self, host, port=0, family=socket.AF_INET):
        return [{"hostname": host, "host": self.address, "port": port, "family": socket.AF_INET,
                 "proto": 0, "flags": socket.AI_NUMERICHOST}]

    async def close(self) -> None:
        pass


def _client(resolver=None, **settings) -> WebhookClient:
    snapshot = WebhookSettings(allow_http=True, timeout=2.0, **settings)
    return WebhookClient(lambda: snapshot, resolver=resolver)


async def _post(client: WebhookClient, url: str):
    try:
        return await client.post(url, b"{}", {"content-type": "application/json"})
    finally:
        await client.aclose()


async def test_loopback_is_refused_in_the_connection(receiver):
    outcome = await _post(_client(), receiver.url)
    assert outcome.status is None
    assert outcome.error == "webhook connection refused: 127.0.0.1, a loopback address, is not allowed"
    assert receiver.got == []


async def test_a_hostname_resolving_to_loopback_is_refused(receiver):
    port = receiver.url.rsplit(":", 1)[1]
    outcome = await _post(_client(), f"http://localhost:{port}")
    assert outcome.status is None and "a loopback address, is not allowed" in outcome.error
    rebound = await _post(_client(FixedDNS("127.0.0.1")), f"http://hooks.example.com:{port}/hook")
    assert rebound.error == "webhook connection refused: 127.0.0.1, a loopback address, is not allowed"
    assert receiver.got == []


async def test_link_local_and_metadata_are_refused_before_any_packet():
    for address, why in (("169.254.169.254", "169.254.169.254, the cloud metadata address"),
                         ("169.254.10.1", "169.254.10.1, a link-local address")):
        outcome = await _post(_client(FixedDNS(address)), "http://metadata.example.com/latest")
        assert outcome.error == f"webhook connection refused: {why}, is not allowed"


async def test_allowed_networks_open_the_connection(receiver):
    outcome = await _post(_client(allow_networks=(ipaddress.ip_network("127.0.0.1/32"),)), receiver.url)
    assert outcome.status == 200 and len(receiver.got) == 1


async def test_a_redirect_to_loopback_is_not_followed():
    target = await Receiver().start("127.0.0.1")
    redirector = await Receiver(default=307).start("127.0.0.2")
    redirector.extra_headers = {"Location": target.url}
    try:
        client = _client(allow_networks=(ipaddress.ip_network("127.0.0.2/32"),))
        outcome = await _post(client, redirector.url)
        assert (outcome.status, outcome.error) == (307, "answered 307; redirects are not followed")
        assert len(redirector.got) == 1 and target.got == []
    finally:
        await target.stop()
        await redirector.stop()


SPELLINGS = [
    ("http://127.0.0.1/h", "127.0.0.1, a loopback address"),
    ("http://127.1/h", "127.0.0.1, a loopback address"),
    ("http://2130706433/h", "127.0.0.1, a loopback address"),
    ("http://0x7f.0.0.1/h", "127.0.0.1, a loopback address"),
    ("http://[::ffff:127.0.0.1]/h", "127.0.0.1, a loopback address (written as ::ffff:7f00:1)"),
    ("http://[::1]/h", "::1, a loopback address"),
    ("http://localhost/h", "a loopback address"),
    ("http://169.254.169.254/latest/meta-data", "169.254.169.254, the cloud metadata address"),
    ("http://[fe80::1]/h", "fe80::1, a link-local address"),
    ("http://10.0.0.5/h", "10.0.0.5, a private address"),
    ("http://192.168.1.1/h", "192.168.1.1, a private address"),
    ("http://100.64.0.1/h", "100.64.0.1, a carrier-grade NAT (100.64.0.0/10) address"),
    ("http://0.0.0.0/h", "0.0.0.0, the unspecified address"),
    ("http://224.0.0.1/h", "224.0.0.1, a multicast address"),
    ("http://[::ffff:169.254.169.254]/h", "169.254.169.254, the cloud metadata address"),
]


async def test_every_spelling_of_a_refused_address_is_rejected_at_creation(tmp_path, monkeypatch):
    from .test_webhooks_support import webhooks_section

    gw = await start_gateway(tmp_path, monkeypatch, webhooks=webhooks_section(allow_networks=[]))
    try:
        for url, why in SPELLINGS:
            status, error = await gw.call("POST", "/api/webhooks", json={"url": url, "events": ["*"]})
            assert status == 400, (url, error)
            assert error["error"]["code"] == "webhook_url_refused" and error["error"]["param"] == "url"
            assert why in error["error"]["message"], (url, error)
            assert error["error"]["message"].endswith(
                "; webhooks reach public addresses only (or the networks listed in webhooks.allow_networks).")
        status, error = await gw.call("POST", "/api/webhooks", json={"url": "https://8.8.8.8/h", "events": ["*"]})
        assert status == 201, error
        status, error = await gw.call("PATCH", f"/api/webhooks/{error['id']}", json={"url": "http://127.1/h"})
        assert status == 400 and "127.0.0.1, a loopback address" in error["error"]["message"]
        [(count,)] = await gw.rows("SELECT COUNT(*) FROM webhook_endpoints")
        assert count == 1
    finally:
        await gw.stop()


async def test_plain_http_needs_the_config_to_allow_it(tmp_path, monkeypatch):
    from .test_webhooks_support import webhooks_section

    gw = await start_gateway(tmp_path, monkeypatch, webhooks=webhooks_section(allow_http=False))
    try:
        status, error = await gw.call("POST", "/api/webhooks", json={"url": "http://8.8.8.8/h", "events": ["*"]})
        assert status == 400
        assert error["error"]["message"] == ("url must use https; plain http is allowed only when "
                                             "webhooks.allow_http is set.")
    finally:
        await gw.stop()


def test_mapped_and_compatible_forms_are_judged_by_their_ipv4_address():
    policy = NetworkPolicy()
    for text in ("::ffff:10.0.0.1", "::10.0.0.1", "2002:a00:1::", "64:ff9b::a00:1"):
        assert refusal(ipaddress.ip_address(text), policy).startswith("10.0.0.1, a private address")
    assert refusal(ipaddress.ip_address("::ffff:8.8.8.8"), policy) is None
