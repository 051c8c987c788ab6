"""Every failure the gateway reports, and the one place it becomes HTTP.

    GatewayError                      -> OpenAI error body, status from the class
    ├── InvalidRequest          400   bad JSON, wrong types, forbidden fields
    │   ├── UnknownParameter    400
    │   └── ConfigRejected      400   an admin config change that failed to build
    ├── MethodNotAllowed        405   a known path with another method; Allow header set
    ├── RequestTimeout          408   the client stopped sending its body (server.timeouts.body)
    ├── BodyTooLarge            413
    ├── UnsupportedMediaType    415   a Content-Encoding the config does not accept
    ├── AuthenticationFailed    401   missing, wrong, expired or revoked key/session
    ├── PermissionDenied        403   scope, model allow-list, admin-only route
    ├── NotFound                404
    │   └── ModelNotFound       404   code model_not_found
    ├── Conflict                409
    ├── PreconditionFailed      412   If-Match names a config version that is no longer current
    ├── RateLimited             429   rpm/tpm/concurrency, Retry-After set
    ├── QuotaExceeded           429   daily/monthly quota or budget, insufficient_quota
    ├── UpstreamClientError     4xx   an upstream's own 4xx, its status and fields relayed (scrubbed)
    ├── UpstreamError           502   upstream answered badly or the connection broke
    │   ├── UpstreamBadResponse 502   a 2xx that is not what the route promises (HTML, 204, 302, …)
    │   ├── UpstreamResponseTooLarge 502  the answer exceeds the configured cap; not the upstream's fault
    │   └── UpstreamModelRefused 502  the upstream does not serve the model it was sent: a config mistake
    ├── NoHealthyUpstream       503   nothing can serve the model right now
    ├── StoreUnavailable        503   the database refuses writes (its file was deleted)
    ├── FeatureUnavailable      503   a feature the operator has not configured
    ├── LimitsUnavailable       503   the shared limiter (Redis) is down: quotas fail closed
    └── UpstreamTimeout         504

    PortInUse                         not HTTP: `serve` could not bind; the CLI prints it as one line

Handlers raise; `error_response` turns any of these into the JSON body that the
official SDKs parse. Messages name what is wrong and what to do, never a secret.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

if TYPE_CHECKING:
    from .config.holder import ReloadResult


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


class ConfigRejected(InvalidRequest):
    code = "config_invalid"

    def __init__(self, action: str, result: "ReloadResult") -> None:
        problems = (result.error or "").splitlines()
        super().__init__(f"{action} was not applied; version {result.version} keeps serving. "
                         f"Problems: {'; '.join(problems)}")


class MethodNotAllowed(GatewayError):
    """405: the route exists, the method does not; `Allow` lists what does."""

    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class RequestTimeout(GatewayError):
    """408: the client stopped sending its body for longer than server.timeouts.body."""

    status = 408
    type = "invalid_request_error"
    code = "request_timeout"


class UnsupportedMediaType(GatewayError):
    """415: a request body in a Content-Encoding the config does not accept."""

    status = 415
    type = "invalid_request_error"
    code = "unsupported_content_encoding"


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


class UpstreamBadResponse(UpstreamError):
    """Counted against the upstream's health and retried elsewhere while nothing reached the client."""

    code = "upstream_bad_response"


class UpstreamResponseTooLarge(UpstreamError):
    """Raised by the transport (or the relay) when a body outgrows the cap. The
    upstream answered correctly, so its health is left alone and no other
    upstream is tried: it would send the same answer."""

    code = "upstream_response_too_large"


class UpstreamClientError(GatewayError):
    """An upstream's 4xx, relayed with its status and OpenAI fields: the client's
    own mistake, which another upstream would repeat. The status is the
    upstream's, so it is set per instance."""

    def __init__(self, status: int, message: str, *, type: str, code: str | None, param: str | None,
                 upstream: str) -> None:
        super().__init__(message, type=type, code=code, param=param)
        self.status = status
        self.upstream = upstream


class UpstreamModelRefused(UpstreamError):
    """An upstream answered that it does not serve the model the gateway sent it: the
    config maps the public model to a name that upstream lacks. The tenant sees the
    public name only; the log has the upstream's own words."""

    code = "upstream_model_not_found"

    def __init__(self, model: str, upstream: str) -> None:
        super().__init__(
            f"The upstream `{upstream}` does not serve the model `{model}` as configured. This is a gateway "
            f"configuration problem, not your request: the operator must check `upstream_model` for `{model}` "
            "against the models that upstream serves.")
        self.upstream = upstream


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


class FeatureUnavailable(GatewayError):
    """503: a feature the operator has not configured (webhooks without their encryption key)."""

    status = 503
    type = "server_error"
    code = "feature_unavailable"


class LimitsUnavailable(GatewayError):
    """Quotas and budgets cannot be checked without the shared limiter, and
    admitting blind could overspend them: the request is refused until it is
    back. 503, not 429: the client is within its limits, the gateway is not."""

    status = 503
    type = "server_error"
    code = "limits_unavailable"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message, headers=retry_headers(retry_after))
        self.retry_after = retry_after


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


class PortInUse(Exception):
    """`serve` could not bind: another process holds the address. Not an HTTP
    error: the CLI prints `str(exc)`, one line, and exits."""

    def __init__(self, host: str, port: int, setting: str) -> None:
        super().__init__(f"Port {port} on {host} is already in use; stop the process using it "
                         f"or choose another with {setting}.")
        self.host = host
        self.port = port
        self.setting = setting
