"""Standard Webhooks v1: the published test vector and the reference implementation."""

from __future__ import annotations

import base64
from datetime import datetime, timezone

import pytest
from standardwebhooks.webhooks import Webhook

from proxy.webhooks import signing

# The test vector published with the Standard Webhooks reference libraries.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_published_vector_reproduces_exactly():
    key = signing.secret_key(VECTOR_SECRET)
    assert signing.sign(key, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == VECTOR_SIGNATURE


def test_signatures_match_the_reference_implementation_for_new_secrets():
    secret = signing.new_secret()
    body = b'{"type":"key.created","data":{"key_id":7}}'
    stamp = datetime.fromtimestamp(1_700_000_000, tz=timezone.utc)
    ours = signing.headers(signing.secret_key(secret), "evt_1", 1_700_000_000, body)
    assert ours["webhook-signature"] == Webhook(secret).sign("evt_1", stamp, body.decode())
    assert (ours["webhook-id"], ours["webhook-timestamp"]) == ("evt_1", "1700000000")


def test_a_new_secret_is_whsec_and_32_random_bytes():
    secrets = {signing.new_secret() for _ in range(50)}
    assert len(secrets) == 50
    for secret in secrets:
        assert secret.startswith("whsec_")
        assert len(base64.b64decode(secret[6:], validate=True)) == 32


@pytest.mark.parametrize("secret, message", [
    ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "starts with whsec_"),
    ("whsec_not base64!", "followed by base64"),
    ("whsec_" + base64.b64encode(b"x" * 23).decode(), "24 to 64 bytes"),
    ("whsec_" + base64.b64encode(b"x" * 65).decode(), "24 to 64 bytes"),
])
def test_a_malformed_secret_is_refused(secret, message):
    with pytest.raises(signing.BadSecret, match=message):
        signing.secret_key(secret)
