"""Operations (/metrics, /healthz), the reference itself, and the dashboard's pages and exports."""

from __future__ import annotations

from .entry import Error, Route, obj

_HTML = {"type": "string", "contentMediaType": "text/html"}
_CSV = {"type": "string", "contentMediaType": "text/csv"}


def _page(path: str, summary: str, **extra) -> Route:
    return Route(method="GET", path=path, summary=summary, auth="browser", family="Dashboard",
                 content_type="text/html", response=_HTML, **extra)


ROUTES = (
    Route(method="GET", path="/healthz", summary="Liveness: ok, or degraded when the database cannot be written",
          auth="none", family="Operations",
          errors=(Error(503, "degraded", "the database file is gone or unwritable; usage rows are kept to spill"),),
          response=obj(("status",), status={"enum": ["ok", "degraded"]}, config_version="integer"),
          example_response={"status": "ok", "config_version": 3}),
    Route(method="GET", path="/readyz",
          summary="Readiness: 200 while this process can serve, else 503 with every reason",
          auth="none", family="Operations",
          description="For load balancers and Kubernetes readiness probes: no auth, no database access. "
                      "Not ready while the database refuses writes or the usage queue is over its bound, "
                      "while a configured shared limiter (Redis) is not up, or while no enabled upstream "
                      "is healthy.",
          status=200,
          errors=(Error(503, "not_ready", "the database, the shared limiter or every upstream is unavailable; "
                                         "`reasons` lists each"),),
          response=obj(("status",), status={"enum": ["ready", "not_ready"]},
                       reasons={"type": "array", "items": {"type": "string"}}),
          example_response={"status": "ready"}),
    Route(method="GET", path="/metrics", summary="Prometheus metrics", auth="metrics", family="Operations",
          content_type="text/plain", response={"type": "string"},
          example_response="# TYPE bluesminds_requests_total counter\n"),
    Route(method="GET", path="/api/openapi.json", summary="This document", auth="none", family="Operations",
          description="Cacheable: answers 304 to a matching `If-None-Match`.", headers=("etag",),
          response=obj(("openapi", "paths"), openapi="string", paths="object"),
          example_response={"openapi": "3.1.0", "paths": {}}),
    _page("/dashboard/api", "The API reference, rendered from this document"),
    Route(method="GET", path="/dashboard/login", summary="Log-in page", auth="none", family="Dashboard",
          content_type="text/html", response=_HTML),
    Route(method="POST", path="/dashboard/login", summary="A log-in form posted without JavaScript: says to turn it on",
          auth="none", family="Dashboard", status=400, content_type="text/html", response=_HTML),
    Route(method="GET", path="/dashboard/signup", summary="Sign-up page", auth="none", family="Dashboard",
          content_type="text/html", response=_HTML),
    Route(method="POST", path="/dashboard/signup", summary="A sign-up form posted without JavaScript",
          auth="none", family="Dashboard", status=400, content_type="text/html", response=_HTML),
    _page("/dashboard", "Overview: today, this month, a 30-day chart, recent requests",
          aliases=("/dashboard/",)),
    _page("/dashboard/api-keys", "API keys"),
    _page("/dashboard/usage", "Usage by day, model and key"),
    _page("/dashboard/logs", "Request log"),
    _page("/dashboard/billing", "Plan, period, invoices and payments"),
    _page("/dashboard/billing/invoices/{id}", "One invoice"),
    _page("/dashboard/settings", "Profile, password, sessions, webhooks"),
    _page("/dashboard/settings/webhooks/{id}", "One webhook endpoint and its deliveries"),
    _page("/dashboard/admin", "Servers, users, config (admins; a tenant gets 403)"),
    Route(method="GET", path="/dashboard/logs/export.csv", summary="Every log row matching the filters, as CSV",
          auth="browser", family="Dashboard", content_type="text/csv", response=_CSV,
          query_params=(("model", "string", "as GET /api/usage/logs"), ("key_id", "integer", "one key"),
                        ("status", "string", "an HTTP status, or 2xx/4xx/5xx"),
                        ("from", "string", "from this time"), ("to", "string", "before this time"))),
    Route(method="GET", path="/dashboard/usage/export.csv", summary="The usage table of the page, as CSV",
          auth="browser", family="Dashboard", content_type="text/csv", response=_CSV,
          query_params=(("from", "string", "first day, YYYY-MM-DD"), ("to", "string", "last day, YYYY-MM-DD"),
                        ("key_id", "integer", "one key"))),
    Route(method="GET", path="/dashboard/static/{name}", summary="The dashboard's vendored CSS, JS and icons",
          auth="none", family="Dashboard", content_type="application/octet-stream", response={"type": "string"},
          description="Cached for a year: the URL carries the file's content hash.", headers=("etag",)),
)

# Routes that exist on purpose without a description of their own.
UNDESCRIBED = {
    ("*", "/dashboard/{tail}"): "the dashboard's catch-all 404 page for unknown paths",
}
