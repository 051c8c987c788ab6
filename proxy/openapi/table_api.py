"""The management API: /api/auth, /api/keys, /api/usage, /api/admin (users, invites, config, servers)."""

from __future__ import annotations

from .entry import NULLABLE_INT, NULLABLE_STR, Error, Route, listing, obj

NOT_FOUND = Error(404, "not_found", "no such object, or it belongs to another account")
_ADMIN_ONLY = Error(403, "permission_denied", "a tenant naming another user")

_KEY = obj(("object", "id", "name", "prefix"), object={"const": "api_key"}, id="integer", user_id="integer",
           name="string", prefix="string", scopes={"type": "array", "items": {"type": "string"}},
           models={"type": ["array", "null"]}, limits="object", expires_at=NULLABLE_INT, created_at="integer",
           last_used_at=NULLABLE_INT, revoked_at=NULLABLE_INT, previous_key_expires_at=NULLABLE_INT)
_KEY_WITH_SECRET = {"allOf": [_KEY, obj(("key",), key={"type": "string", "description": "shown this once"})]}
_SCOPES = ["chat", "completions", "embeddings", "models", "responses", "messages", "moderations", "images",
           "audio", "rerank"]
_KEY_EXAMPLE = {"object": "api_key", "id": 2, "user_id": 1, "name": "laptop", "prefix": "bm-b91f2e38be22",
                "scopes": _SCOPES, "models": None, "limits": {"rpm": 60}, "expires_at": None,
                "created_at": 1773576000, "last_used_at": None, "revoked_at": None,
                "previous_key_expires_at": None}
_SECRET = "bm-b91f2e38be22_YSTPmwhbzO9gkD7i2x4866BIxSbjxUjjftAzLXr2tc0"
_USER = obj(("object", "id", "email"), object={"const": "user"}, id="integer", email="string", name="string",
            plan="string", role={"enum": ["user", "admin"]}, disabled="boolean", created_at="integer")
_USER_EXAMPLE = {"object": "user", "id": 1, "email": "ada@example.com", "name": "Ada", "plan": "pro",
                 "role": "user", "disabled": False, "created_at": 1773576000}
_SERVER = obj(("object", "name", "url"), object={"const": "server"}, name="string", url="string",
              weight="integer", priority="integer", models={"type": "array"}, region=NULLABLE_STR,
              enabled="boolean", drain="boolean", managed="boolean", state="string", source="string")
_SERVER_EXAMPLE = {"object": "server", "name": "gpu-2", "url": "http://10.0.0.7:4000", "weight": 1, "priority": 1,
                   "models": ["*"], "region": None, "max_concurrent": None,
                   "timeouts": {"connect": 5.0, "first_byte": 120.0, "total": 600.0}, "api_key_env": None,
                   "enabled": True, "drain": False, "source": "config/servers.managed.yaml", "managed": True,
                   "state": "healthy"}
_HEALTH = listing(obj(("name", "state"), name="string", state="string", in_flight="integer",
                      last_error=NULLABLE_STR), events={"type": "array"}, config_version="integer")
_HEALTH_EXAMPLE = {"object": "list", "data": [{"name": "gpu-1", "state": "healthy", "in_flight": 0,
                                               "last_error": None}], "events": [], "config_version": 3}
_TOTALS = obj(requests="integer", errors="integer", prompt_tokens="integer", completion_tokens="integer",
              total_tokens="integer", cost_usd="number", cost_nano="integer")
_CONFIG_REJECTED = Error(400, "config_invalid", "the change would make the config invalid; nothing was applied")
_STALE = Error(412, "precondition_failed", "`If-Match` names a config version that is no longer current")


def _auth(method, path, summary, **extra) -> Route:
    return Route(method=method, path=path, summary=summary, family="Accounts", **extra)


def _keys(method, path, summary, **extra) -> Route:
    return Route(method=method, path=path, summary=summary, auth="user", family="API keys", **extra)


def _admin(method, path, summary, **extra) -> Route:
    return Route(method=method, path=path, summary=summary, auth="admin", family="Admin", **extra)


ROUTES = (
    _auth("POST", "/api/auth/signup", "Sign up", auth="none", body="signup", status=202,
          description="Answers 202 whether or not the address already has an account.",
          errors=(Error(403, "signup_closed", "`auth.signup` is closed, or invite-only without a valid code"),
                  Error(429, "rate_limit_exceeded", "too many signups from this address")),
          response=obj(("object", "email"), object={"const": "signup"}, email="string", message="string"),
          example_request={"email": "ada@example.com", "password": "correct horse battery", "name": "Ada"},
          example_response={"object": "signup", "email": "ada@example.com",
                            "message": "Signup received. Log in with POST /api/auth/login using this "
                                       "e-mail address and password."}),
    _auth("POST", "/api/auth/login", "Log in; sets the session cookie and returns a bearer token", auth="none",
          body="login", errors=(Error(401, "invalid_credentials", "wrong e-mail or password"),
                                Error(403, "account_disabled", "the account is disabled"),
                                Error(429, "rate_limit_exceeded", "too many failed logins from this address")),
          response=obj(("token",), object="string", token="string", expires_at="integer", user=_USER),
          example_request={"email": "ada@example.com", "password": "correct horse battery"},
          example_response={"object": "session", "token": "bms_Qm9vayBvZiBLZWxscw", "expires_at": 1774180800,
                            "user": _USER_EXAMPLE}),
    _auth("POST", "/api/auth/logout", "Log out this session", auth="user", body="empty",
          response=obj(("object",), object="string"), example_request={},
          example_response={"object": "session", "revoked": True}),
    _auth("GET", "/api/auth/me", "The caller's account", auth="account", query="empty", response=_USER,
          example_response=_USER_EXAMPLE),
    _auth("PATCH", "/api/auth/me", "Change the caller's name, e-mail or password", auth="account", body="me_update",
          errors=(Error(401, "invalid_credentials", "`current_password` is wrong"),),
          response=_USER, example_request={"name": "Ada Lovelace"},
          example_response={**_USER_EXAMPLE, "name": "Ada Lovelace"}),
    _auth("GET", "/api/auth/sessions", "The account's sessions", auth="account", query="empty",
          response=listing(obj(("id",), id="integer", created_at="integer", current="boolean")),
          example_response={"object": "list", "data": [{"id": 7, "created_at": 1773576000, "current": True}],
                            "has_more": False}),
    _auth("DELETE", "/api/auth/sessions", "Log out everywhere", auth="account", body="empty",
          response=obj(("object",), object="string", revoked="integer"), example_request={},
          example_response={"object": "list", "revoked": 3}),

    _keys("GET", "/api/keys", "List API keys, with their usage", query="keys_query", errors=(_ADMIN_ONLY,),
          response=listing(_KEY), example_request={"include_revoked": True},
          example_response={"object": "list", "data": [_KEY_EXAMPLE]}),
    _keys("POST", "/api/keys", "Create an API key; the secret is in this answer only", body="key_create",
          status=201, errors=(_ADMIN_ONLY, Error(400, "invalid_request", "a limit above the plan's, an unknown model")),
          response=_KEY_WITH_SECRET,
          example_request={"name": "laptop", "models": ["gpt-4o-mini"], "limits": {"rpm": 60}},
          example_response={**_KEY_EXAMPLE, "models": ["gpt-4o-mini"], "key": _SECRET}),
    _keys("GET", "/api/keys/{id}", "One API key", query="empty", errors=(NOT_FOUND,), response=_KEY,
          example_response=_KEY_EXAMPLE),
    _keys("PATCH", "/api/keys/{id}", "Change a key's name, scopes, models, limits or expiry", body="key_update",
          errors=(NOT_FOUND,), response=_KEY, example_request={"name": "desk", "limits": {"rpm": 30}},
          example_response={**_KEY_EXAMPLE, "name": "desk", "limits": {"rpm": 30}}),
    _keys("DELETE", "/api/keys/{id}", "Revoke a key", body="empty", errors=(NOT_FOUND,),
          response=obj(("id", "deleted"), object="string", id="integer", deleted="boolean"), example_request={},
          example_response={"object": "api_key.deleted", "id": 2, "deleted": True}),
    _keys("POST", "/api/keys/{id}/rotate", "Rotate a key: a new secret, the old one kept for an overlap",
          body="key_rotate", errors=(NOT_FOUND,), response=_KEY_WITH_SECRET,
          example_request={"overlap_seconds": 3600},
          example_response={**_KEY_EXAMPLE, "previous_key_expires_at": 1773579600, "key": _SECRET}),

    Route(method="GET", path="/api/usage/stats", summary="Usage totals by day, model or key", auth="user",
          family="Usage", errors=(_ADMIN_ONLY, Error(400, "invalid_request", "`from` after `to`, a bad date")),
          query_params=(("from", "string", "first day, YYYY-MM-DD (default: 29 days before `to`)"),
                        ("to", "string", "last day, YYYY-MM-DD (default: today, UTC)"),
                        ("group_by", "string", "day | model | key"),
                        ("key_id", "integer", "one key's usage"),
                        ("user_id", "integer", "admins: another user's usage")),
          response=obj(("object", "data", "total"), object={"const": "usage.stats"}, group_by="string",
                       data={"type": "array"}, total=_TOTALS),
          example_request={"from": "2026-03-01", "to": "2026-03-15", "group_by": "model"},
          example_response={"object": "usage.stats", "group_by": "model", "from": "2026-03-01", "to": "2026-03-15",
                            "user_id": None, "key_id": None,
                            "data": [{"model": "gpt-4o-mini", "requests": 12, "errors": 0, "prompt_tokens": 300,
                                      "completion_tokens": 90, "total_tokens": 390, "cost_usd": 0.0001,
                                      "cost_nano": 99000}],
                            "total": {"requests": 12, "errors": 0, "prompt_tokens": 300, "completion_tokens": 90,
                                      "total_tokens": 390, "cost_usd": 0.0001, "cost_nano": 99000}}),
    Route(method="GET", path="/api/usage/logs", summary="The request log, newest first, in cursor pages",
          auth="user", family="Usage",
          errors=(_ADMIN_ONLY, Error(400, "invalid_request", "a cursor this API did not give out, a bad time")),
          query_params=(("model", "string", "one model"), ("key_id", "integer", "one key"),
                        ("status", "string", "an HTTP status, or 2xx/4xx/5xx"),
                        ("from", "string", "from this time (epoch seconds or ISO 8601)"),
                        ("to", "string", "before this time"), ("cursor", "string", "`next_cursor` of the last page"),
                        ("limit", "integer", "rows per page, 1–500"),
                        ("user_id", "integer", "admins: another user's log")),
          response=listing(obj(("request_id",), request_id="string", model="string", status="integer"),
                           has_more="boolean", next_cursor=NULLABLE_STR),
          example_request={"limit": 2, "status": "2xx"},
          example_response={"object": "list", "data": [{"request_id": "req_7f3a", "model": "gpt-4o-mini",
                                                        "status": 200}], "has_more": False, "next_cursor": None}),

    _admin("GET", "/api/admin/users", "List users", query="admin_users_query",
           response=listing(_USER, has_more="boolean"), example_request={"plan": "pro", "limit": 50},
           example_response={"object": "list", "data": [_USER_EXAMPLE], "first_id": 1, "last_id": 1,
                             "has_more": False}),
    _admin("GET", "/api/admin/users/{id}", "One user", query="empty", errors=(NOT_FOUND,), response=_USER,
           example_response=_USER_EXAMPLE),
    _admin("PATCH", "/api/admin/users/{id}", "Change a user's plan, role or disabled flag",
           body="admin_user_update", errors=(NOT_FOUND, Error(400, "plan_not_found", "no such plan")),
           response=_USER, example_request={"plan": "pro"}, example_response=_USER_EXAMPLE),
    _admin("GET", "/api/admin/invites", "List invite codes", query="empty",
           response=listing(obj(("id",), id="integer", plan=NULLABLE_STR, used_at=NULLABLE_INT)),
           example_response={"object": "list", "data": [], "has_more": False}),
    _admin("POST", "/api/admin/invites", "Create an invite code; the code is in this answer only",
           body="invite_create", status=201,
           response=obj(("object", "code"), object={"const": "invite"}, id="integer", code="string",
                        expires_at="integer"),
           example_request={"note": "for Grace", "expires_in_seconds": 604800},
           example_response={"object": "invite", "id": 1, "plan": None, "note": "for Grace", "created_by": None,
                             "created_at": 1773576000, "expires_at": 1774180800, "used_by": None, "used_at": None,
                             "code": "bmi_FcIiTAoLr8in7UAnImZFZufDEdSIsGjb"}),
    _admin("GET", "/api/admin/config", "The live config's version, files, last reload error and diff",
           response=obj(("version", "digest"), version="integer", digest="string", last_error=NULLABLE_STR,
                        files={"type": "array"}), headers=("etag",),
           example_response={"version": 3, "digest": "4b37a9aa7a949130", "loaded_at": 1773576000.5,
                             "files": ["config/gateway.yaml"], "reloads": 2, "failed_reloads": 0,
                             "last_error": None, "last_error_at": None, "last_diff": None,
                             "managed_file": "config/servers.managed.yaml", "upstreams": [],
                             "models": ["gpt-4o-mini"], "plans": ["pro"]}),
    _admin("POST", "/api/admin/reload", "Reload the config files now (all or nothing)",
           errors=(_CONFIG_REJECTED,), response=obj(("changed", "version"), changed="boolean", version="integer",
                                                     digest="string"),
           example_response={"changed": False, "version": 3, "digest": "4b37a9aa7a949130"}),
    _admin("GET", "/api/admin/health", "Every upstream's health", response=_HEALTH, example_response=_HEALTH_EXAMPLE),
    _admin("POST", "/api/admin/health", "Probe every upstream now, then answer their health", response=_HEALTH,
           example_response=_HEALTH_EXAMPLE),
    _admin("GET", "/api/admin/servers", "List upstream servers", response=listing(_SERVER, config_version="integer"),
           headers=("etag",), example_response={"object": "list", "data": [_SERVER_EXAMPLE], "config_version": 3}),
    _admin("POST", "/api/admin/servers", "Add an upstream server (kept in servers.managed.yaml)",
           body="config.upstreams#/items", status=201, headers=("etag",),
           description="Honours `If-Match` with the ETag of GET /api/admin/servers.",
           errors=(_CONFIG_REJECTED, _STALE, Error(409, "server_exists", "a server of that name exists")),
           response=_SERVER, example_request={"name": "gpu-2", "url": "http://10.0.0.7:4000", "models": "*"},
           example_response=_SERVER_EXAMPLE),
    _admin("GET", "/api/admin/servers/{name}", "One upstream server",
           errors=(Error(404, "server_not_found", "no server of that name"),), response=_SERVER,
           example_response=_SERVER_EXAMPLE),
    _admin("PATCH", "/api/admin/servers/{name}", "Change a server: weight, drain, enabled, … (null removes a field)",
           body="config.upstream_change", headers=("etag",),
           description="A server from a hand-written file can only be drained or disabled here.",
           errors=(_CONFIG_REJECTED, _STALE, Error(404, "server_not_found", "no server of that name"),
                   Error(409, "server_in_hand_written_file", "a field other than drain/enabled of a hand-written server")),
           response=_SERVER, example_request={"weight": 5, "drain": True},
           example_response={**_SERVER_EXAMPLE, "weight": 5, "drain": True}),
    _admin("DELETE", "/api/admin/servers/{name}", "Remove a managed server",
           errors=(_STALE, Error(404, "server_not_found", "no server of that name"),
                   Error(409, "server_in_hand_written_file", "the server is declared in a hand-written file")),
           response=obj(("name", "deleted"), object="string", name="string", deleted="boolean",
                        config_version="integer"),
           example_response={"object": "server", "name": "gpu-2", "deleted": True, "config_version": 4}),
)
