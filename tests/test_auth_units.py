"""Password rules, the login throttle, key format and schema messages, without HTTP."""

from __future__ import annotations

import pytest

from proxy.auth.keys import format_key, new_secret, parse_key
from proxy.auth.passwords import check_length_only, check_password, hash_rounds, hash_secret, verify_secret
from proxy.auth.throttle import LoginThrottle
from proxy.auth.users import normalize_email
from proxy.config.snapshot import AuthSettings
from proxy.errors import InvalidRequest, RateLimited
from proxy.validation import validate

from .test_auth_support import FakeClock


def test_72_byte_rule():
    settings = AuthSettings(password_min_length=1)
    assert check_password("a" * 72, settings) == b"a" * 72
    with pytest.raises(InvalidRequest) as refused:
        check_password("a" * 73, settings)
    assert refused.value.param == "password"
    with pytest.raises(InvalidRequest):
        check_password("€" * 25, settings)  # 25 characters, 75 bytes
    with pytest.raises(InvalidRequest):
        check_length_only("x" * 73)


def test_bcrypt_compares_every_byte():
    hashed = hash_secret(b"b" * 72, 4)
    assert hash_rounds(hashed) == 4
    assert verify_secret(b"b" * 72, hashed)
    assert not verify_secret(b"b" * 71 + b"c", hashed)


def test_minimum_length_counts_characters():
    settings = AuthSettings(password_min_length=10)
    with pytest.raises(InvalidRequest) as refused:
        check_password("short", settings)
    assert refused.value.message == "The password must be at least 10 characters long."
    assert check_password("éééééééééé", settings)


@pytest.mark.parametrize("raw, normal", [
    (" Ada@Example.COM ", "ada@example.com"), ("ＡＢ@example.com", "ab@example.com"),
])
def test_email_normalisation(raw, normal):
    assert normalize_email(raw) == normal


@pytest.mark.parametrize("raw", ["", "ada", "ada@", "@example.com", "a b@example.com", "a@b", "a@b."])
def test_email_rejects(raw):
    with pytest.raises(InvalidRequest):
        normalize_email(raw)


def test_throttle_sliding_window():
    clock = FakeClock()
    throttle = LoginThrottle(clock)
    for _ in range(3):
        throttle.check(["a"], 3)
        throttle.fail(["a"], 3)
        clock.advance(10)
    with pytest.raises(RateLimited) as limited:
        throttle.check(["a"], 3)
    assert limited.value.retry_after == 30
    throttle.check(["b"], 3)
    throttle.check(["a"], 4)  # a raised limit applies at once
    clock.advance(30)
    throttle.check(["a"], 3)


def test_throttle_forgets_oldest_keys_beyond_its_bound():
    throttle = LoginThrottle(FakeClock(), max_tracked=2)
    for key in "abc":
        throttle.fail([key], 1)
    throttle.check(["a"], 1)
    with pytest.raises(RateLimited):
        throttle.check(["c"], 1)


def test_key_format_round_trip():
    secret = new_secret()
    text = format_key("0123456789ab", secret)
    assert parse_key(text) == ("0123456789ab", secret)
    assert len(text.encode()) <= 72
    for bad in (text + "x", text[:-1], text.replace("bm-", "sk-"), text.upper()):
        assert parse_key(bad) is None


def test_schema_messages_never_quote_the_value():
    with pytest.raises(InvalidRequest) as refused:
        validate({"email": "a@b.co", "password": "x" * 2000}, "signup")
    assert refused.value.param == "password"
    assert "x" * 20 not in refused.value.message
    assert refused.value.message == "Field 'password' must be at most 1024 characters long."
