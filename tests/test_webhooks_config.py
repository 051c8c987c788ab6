"""The `webhooks` config section: one bad file per error, each with its exact message."""

from __future__ import annotations

import base64

import pytest

from proxy.config import ConfigError, load_config

BASE = """models:
  m: {pricing: {input: 1, output: 1}}
upstreams:
  - {name: u, url: "http://127.0.0.1:9", models: "*"}
"""
KEY = base64.b64encode(b"k" * 32).decode()
SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()


def _load(tmp_path, webhooks: str, environ: dict | None = None):
    path = tmp_path / "gateway.yaml"
    path.write_text(BASE + "webhooks:\n" + webhooks)
    return load_config(str(path), environ=environ or {})


def test_a_complete_section_builds(tmp_path):
    snapshot = _load(tmp_path, """  encryption_key_env: WK
  allow_networks: [10.0.0.0/8, "::1"]
  timeout: 5s
  endpoints:
    - {name: ops, url: "https://ops.example.com/hook", events: [upstream.down], secret_env: OPS}
""", {"WK": KEY, "OPS": SECRET})
    settings = snapshot.webhooks
    assert settings.encryption_key == b"k" * 32 and settings.timeout == 5.0
    assert [str(n) for n in settings.allow_networks] == ["10.0.0.0/8", "::1/128"]
    [endpoint] = settings.endpoints
    assert (endpoint.name, endpoint.events, endpoint.secret) == ("ops", ("upstream.down",), SECRET)
    assert SECRET not in repr(snapshot)


@pytest.mark.parametrize("section, environ, message", [
    ("  allow_networks: [10.0.0.0/33]\n", {},
     "gateway.yaml:6: webhooks.allow_networks[0]: not an IP address or CIDR network (such as 10.0.0.0/8 or ::1)"),
    ("  encryption_key_env: WK\n", {},
     "gateway.yaml:6: webhooks.encryption_key_env: environment variable WK is not set (it holds a secret the "
     "config names)"),
    ("  encryption_key_env: WK\n", {"WK": "c2hvcnQ="},
     "gateway.yaml:6: webhooks.encryption_key_env: environment variable WK must hold 32 random bytes, "
     "base64-encoded (openssl rand -base64 32)"),
    ("  endpoints:\n    - {url: 'http://ops.example.com/h', events: ['*'], secret_env: OPS}\n", {"OPS": SECRET},
     "gateway.yaml:7: webhooks.endpoints[0].url: must use https; set webhooks.allow_http to allow plain http"),
    ("  endpoints:\n    - {url: 'https://ops.example.com/h', events: ['*'], secret_env: OPS}\n", {"OPS": "nope"},
     "gateway.yaml:7: webhooks.endpoints[0].secret_env: environment variable OPS: a webhook secret starts "
     "with whsec_"),
    ("  endpoints:\n    - {url: 'https://ops.example.com/h', events: [key.exploded], secret_env: OPS}\n", {},
     "gateway.yaml:7: webhooks.endpoints[0].events[0]: 'key.exploded' is not one of"),
])
def test_a_bad_section_is_refused_with_its_place_and_reason(tmp_path, section, environ, message):
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, section, environ)
    text = str(info.value).replace(str(tmp_path) + "/", "")
    assert text.startswith(message), text
