"""Every failure the gateway reports, and the one place it becomes HTTP.

    GatewayError                      -> OpenAI error body, status from the class
    ├── InvalidRequest          400   bad JSON, wrong types, forbidden fields
    │   └── UnknownParameter    400
    ├── BodyTooLarge            413
    ├── AuthenticationFailed    401   missing, wrong, expired or revoked key/session
    ├── PermissionDenied        403   scope, model allow-list, admin-only route
    ├── NotFound                404
    │   └── ModelNotFound       404   code model_not_found
    ├── Conflict                409
    ├── PreconditionFailed      412   If-Match names a config version that is no longer current
    ├── RateLimited             429   rpm/tpm/concurrency, Retry-After set
    ├── QuotaExceeded           429   daily/monthly quota or budget, insufficient_quota
    ├── UpstreamError           502   upstream answered badly or the connection broke
    ├── NoHealthyUpstream       503   nothing can serve the model right now
    ├── StoreUnavailable        503   the database refuses writes (its file was deleted)
    └── UpstreamTimeout         504

Handlers raise; `error_response` turns any of these into the JSON body that the
official SDKs parse. Messages name what is wrong and what to do, never a secret.
"""

from __future__ import annotations

import math
from typing import Any

import orjson
from aiohttp import web


class GatewayError(Exception):
    status = 500
    type = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if type is not None:
            self.type = type
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class UnknownParameter(InvalidRequest):
    code = "unknown_parameter"


class BodyTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class AuthenticationFailed(GatewayError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class PermissionDenied(GatewayError):
    status = 403
    type = "invalid_request_error"
    code = "permission_denied"


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(
            f"The model `{model}` does not exist or you do not have access to it.",
            param="model",
        )


class Conflict(GatewayError):
    status = 409
    type = "invalid_request_error"
    code = "conflict"


class PreconditionFailed(GatewayError):
    status = 412
    type = "invalid_request_error"
    code = "precondition_failed"


class RateLimited(GatewayError):
    """A short-window limit (rpm, tpm, concurrency); the SDK retries it."""

    status = 429
    type = "requests"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float, type: str = "requests",
                 headers: dict[str, str] | None = None) -> None:
        merged = dict(headers or {})
        merged.update(retry_headers(retry_after))
        super().__init__(message, type=type, headers=merged)
        self.retry_after = retry_after


class QuotaExceeded(GatewayError):
    """A calendar quota or budget; retrying before the window turns is pointless."""

    status = 429
    type = "insufficient_quota"
    code = "insufficient_quota"

    def __init__(self, message: str, *, retry_after: float | None = None,
                 headers: dict[str, str] | None = None) -> None:
        merged = dict(headers or {})
        if retry_after is not None:
            merged.update(retry_headers(retry_after))
        # The SDK would otherwise retry a quota that cannot free up for hours.
        merged["x-should-retry"] = "false"
        super().__init__(message, headers=merged)


class UpstreamError(GatewayError):
    status = 502
    type = "server_error"
    code = "upstream_error"


class NoHealthyUpstream(GatewayError):
    status = 503
    type = "server_error"
    code = "no_healthy_upstream"


class StoreUnavailable(GatewayError):
    """Writes are refused until an operator repairs the database; the message
    is for tenants, so it names no path (the log and /healthz do)."""

    status = 503
    type = "server_error"
    code = "store_unavailable"


class UpstreamTimeout(GatewayError):
    status = 504
    type = "server_error"
    code = "upstream_timeout"


def retry_headers(seconds: float) -> dict[str, str]:
    """Both forms the SDK reads: it prefers retry-after-ms, and only trusts
    Retry-After between 0 and 60 s, in whole seconds of at least 1."""
    seconds = max(seconds, 0.001)
    return {
        "retry-after-ms": str(max(1, math.ceil(seconds * 1000))),
        "Retry-After": str(max(1, math.ceil(seconds))),
    }


def error_body(message: str, *, type: str, code: str | None, param: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type, "param": param, "code": code}})


def error_response(exc: GatewayError, extra_headers: dict[str, str] | None = None) -> web.Response:
    headers = dict(exc.headers)
    if extra_headers:
        headers.update(extra_headers)
    return web.Response(
        status=exc.status,
        body=orjson.dumps(exc.body()),
        content_type="application/json",
        headers=headers,
    )
