"""Templates, static files, security headers, and how a failure looks on a page."""

from __future__ import annotations

import functools
import hashlib
import mimetypes
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import quote

import jinja2
from aiohttp import web

from ..appkeys import JINJA, STATIC_FILES
from ..auth.management import Caller, identify
from ..errors import AuthenticationFailed, GatewayError, NotFound, PermissionDenied
from . import formats, prose

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"

SECURITY_HEADERS = {
    # No inline script and no inline style anywhere: scripts and CSS are static files.
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'self'; "
                               "form-action 'self'; object-src 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}

NAV = (
    ("Overview", "/dashboard"),
    ("API keys", "/dashboard/api-keys"),
    ("Usage", "/dashboard/usage"),
    ("Logs", "/dashboard/logs"),
    ("Billing", "/dashboard/billing"),
    ("Settings", "/dashboard/settings"),
    ("API reference", "/dashboard/api"),
)
ADMIN_NAV = (("Admin", "/dashboard/admin"),)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class StaticFiles:
    """The static directory, read once at start-up: a handful of small files."""

    def __init__(self, root: Path) -> None:
        self.files: dict[str, tuple[bytes, str, str]] = {}
        for path in sorted(root.rglob("*")):
            if path.is_file():
                body = path.read_bytes()
                kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
                if path.name.endswith("LICENSE"):
                    kind = "text/plain"
                tag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
                self.files[path.relative_to(root).as_posix()] = (body, kind, tag)

    def version(self, name: str) -> str:
        return self.files[name][2].strip('"')




def setup(app: web.Application) -> None:
    static = StaticFiles(STATIC)
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,  # everything a user typed is escaped: key names, e-mails, models
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(formats.FILTERS)
    env.filters["code_spans"] = prose.code_spans
    # A content hash in the URL lets browsers keep static files for a year.
    env.globals["static"] = lambda name: f"/dashboard/static/{name}?v={static.version(name)}"
    app[JINJA] = env
    app[STATIC_FILES] = static
    app.router.add_get("/dashboard/static/{name:.+}", serve_static)


def setup_fallback(app: web.Application) -> None:
    app.router.add_route("*", "/dashboard/{tail:.*}", not_found)


def secure(response: web.StreamResponse) -> web.StreamResponse:
    if not response.prepared:  # a streamed export has set them before its first byte
        response.headers.update(SECURITY_HEADERS)
    return response


def render(request: web.Request, template: str, *, status: int = 200,
           caller: Caller | None = None, **context: Any) -> web.Response:
    env = request.app[JINJA]
    nav = NAV + (ADMIN_NAV if caller is not None and caller.is_admin else ())
    html = env.get_template(template).render(
        caller=caller, nav=nav if caller is not None else (), path=request.path, **context
    )
    response = web.Response(text=html, status=status, content_type="text/html", charset="utf-8")
    # Pages hold account data: never kept by a shared cache or the back button of another user.
    response.headers["Cache-Control"] = "no-store"
    return secure(response)


def login_redirect(request: web.Request) -> web.Response:
    target = request.path_qs
    location = "/dashboard/login"
    if target not in ("/dashboard", "/dashboard/"):
        location += "?next=" + quote(target, safe="")
    return secure(web.Response(status=303, headers={"Location": location}))


def page(fn: Callable[[web.Request, Caller], Awaitable[web.StreamResponse]],
         *, admin: bool = False) -> Handler:
    """A page for a logged-in caller: anonymous visits go to the login page, a
    tenant on an admin page gets 403, and an API error shows as a page."""

    @functools.wraps(fn)
    async def handler(request: web.Request) -> web.StreamResponse:
        try:
            caller = await identify(request)
        except AuthenticationFailed:
            caller = None
        if caller is None or caller.user is None:
            return login_redirect(request)
        if admin and not caller.is_admin:
            return error_page(request, PermissionDenied(
                "This page is for administrators. Ask an administrator to give your account the "
                "admin role.", code="admin_required"), caller)
        try:
            return secure(await fn(request, caller))
        except AuthenticationFailed:
            return login_redirect(request)
        except GatewayError as exc:
            return error_page(request, exc, caller)

    return handler


def public(fn: Handler) -> Handler:
    @functools.wraps(fn)
    async def handler(request: web.Request) -> web.StreamResponse:
        try:
            return secure(await fn(request))
        except GatewayError as exc:
            return error_page(request, exc, None)

    return handler


def error_page(request: web.Request, exc: GatewayError, caller: Caller | None) -> web.Response:
    titles = {400: "That request was not valid", 403: "Not allowed here", 404: "Not found"}
    return render(request, "error.html", status=exc.status, caller=caller,
                  title=titles.get(exc.status, "Something went wrong"), message=exc.message)


async def not_found(request: web.Request) -> web.Response:
    try:
        caller = await identify(request)
    except AuthenticationFailed:
        caller = None
    return error_page(request, NotFound(f"There is no dashboard page at {request.path}."), caller)


async def serve_static(request: web.Request) -> web.Response:
    found = request.app[STATIC_FILES].files.get(request.match_info["name"])
    if found is None:
        return await not_found(request)
    body, kind, tag = found
    headers = {"ETag": tag, "Cache-Control": "public, max-age=31536000, immutable"}
    if request.headers.get("If-None-Match") == tag:
        return secure(web.Response(status=304, headers=headers))
    return secure(web.Response(body=body, content_type=kind, headers=headers))
