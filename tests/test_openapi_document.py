"""The API reference: every route described, the document valid OpenAPI 3.1, every example valid."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_spec

from proxy.app import create_app
from proxy.cli import main
from proxy.openapi import ROUTES, build_document
from proxy.openapi.entry import AUTH
from proxy.openapi.table_site import UNDESCRIBED

from .gateway_harness import GatewayHarness, upstream_entry

# aiohttp adds HEAD beside every GET; CORS preflights (OPTIONS) are answered by the middleware.
AUTO_METHODS = {"HEAD", "OPTIONS"}


def app_routes(tmp_path) -> set[tuple[str, str]]:
    GatewayHarness.write(str(tmp_path), [upstream_entry("a", "http://127.0.0.1:9")])
    app = create_app(str(tmp_path), watch=False)
    found = set()
    for route in app.router.routes():
        if route.method in AUTO_METHODS:
            continue
        info = route.resource.get_info()
        found.add((route.method, info.get("path") or info["formatter"]))
    return found


def described() -> set[tuple[str, str]]:
    return {(r.method, path) for r in ROUTES for path in (r.path, *r.aliases)}


def test_every_route_of_the_app_has_a_description(tmp_path):
    missing = sorted(app_routes(tmp_path) - described() - set(UNDESCRIBED))
    assert missing == [], ("routes without a description; add a Route(...) to a proxy/openapi/table_*.py: "
                           + ", ".join(f"{m} {p}" for m, p in missing))


def test_every_description_names_a_route_that_exists(tmp_path):
    stale = sorted(described() - app_routes(tmp_path))
    assert stale == [], "descriptions of routes the app does not have: " + ", ".join(f"{m} {p}" for m, p in stale)


def test_routes_are_described_once():
    keys = [(r.method, path) for r in ROUTES for path in (r.path, *r.aliases)]
    assert len(keys) == len(set(keys))


def test_the_document_is_valid_openapi_3_1():
    document = build_document()
    validate_spec(document)
    assert document["openapi"] == "3.1.0"
    assert len(document["paths"]) == len({r.path for r in ROUTES})


def test_each_entry_has_its_auth_errors_and_an_example():
    document = build_document()
    for route in ROUTES:
        op = document["paths"][route.path][route.method.lower()]
        assert route.auth in AUTH and op["x-bluesminds-auth"] == route.auth
        assert "Auth: " + AUTH[route.auth] in op["description"]
        if route.content_type == "application/json":
            assert route.example_response is not None, f"{route.method} {route.path} has no example answer"
        if route.body and route.body != "v1.audio_upload":
            assert route.example_request is not None, f"{route.method} {route.path} has no example request"
        for status, answer in op["responses"].items():
            if int(status) >= 400 and int(status) != route.status:
                for code, example in answer["content"]["application/json"]["examples"].items():
                    assert example["value"]["error"]["code"] == code


def test_management_errors_carry_their_codes_and_statuses():
    document = build_document()
    create_key = document["paths"]["/api/keys"]["post"]["responses"]
    assert set(create_key) >= {"201", "400", "401", "403", "413"}
    assert "unknown_parameter" in create_key["400"]["content"]["application/json"]["examples"]
    assert "csrf_rejected" in create_key["403"]["content"]["application/json"]["examples"]
    chat = document["paths"]["/v1/chat/completions"]["post"]
    assert set(chat["responses"]["429"]["content"]["application/json"]["examples"]) == {
        "rate_limit_exceeded", "insufficient_quota"}
    assert set(chat["responses"]["429"]["headers"]) == {"x-request-id", "retry-after"}
    assert "x-ratelimit-remaining-requests" in chat["responses"]["200"]["headers"]
    assert "Also served at `/api/v1/chat/completions`, `/chat/completions`." in chat["description"]


def test_request_schemas_are_the_validators_own_files():
    schemas = build_document()["components"]["schemas"]
    key_create = json.load(open("proxy/schemas/api/key_create.json"))
    assert set(schemas["key_create"]["properties"]) == set(key_create["properties"])
    assert schemas["key_create"]["properties"]["limits"] == {"$ref": "#/components/schemas/key_limits"}
    assert schemas["key_update"]["properties"]["name"] == {"$ref": "#/components/schemas/key_create/properties/name"}
    assert "weight" in schemas["config.upstream_change"]["propertyNames"]["enum"]


def _validator(document, schema):
    return Draft202012Validator({**schema, "components": document["components"]})


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.method} {r.path}")
def test_examples_validate_against_their_schemas(route):
    document = build_document()
    op = document["paths"][route.path][route.method.lower()]
    if route.example_request is not None and route.body:
        schema = op["requestBody"]["content"]
        errors = list(_validator(document, next(iter(schema.values()))["schema"]).iter_errors(route.example_request))
        assert errors == [], errors[0].message
    if route.example_request is not None and route.query:
        errors = list(_validator(document, {"$ref": f"#/components/schemas/{route.query}"})
                      .iter_errors(route.example_request))
        assert errors == [], errors[0].message
    if route.example_response is not None:
        answer = op["responses"][str(route.status)]["content"][route.content_type]
        errors = list(_validator(document, answer["schema"]).iter_errors(route.example_response))
        assert errors == [], errors[0].message


def test_a_wrong_example_is_caught():
    document = build_document()
    schema = {"$ref": "#/components/schemas/key_create"}
    assert [e.message for e in _validator(document, schema).iter_errors({"nme": "x"})] != []


def test_cli_prints_the_served_document():
    result = CliRunner().invoke(main, ["openapi"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    validate_spec(printed)
    assert printed["paths"].keys() == build_document()["paths"].keys()


def test_the_reference_page_lists_each_routes_fields():
    from proxy.openapi.routes import view
    components = build_document()["components"]["schemas"]
    views = {(v["route"].method, v["route"].path): v for v in (view(r, components) for r in ROUTES)}
    fields = {f["name"]: f for f in views[("PATCH", "/api/keys/{id}")]["fields"]}
    assert fields["name"] == {"name": "name", "type": "string", "required": False, "about": ""}
    assert [f["name"] for f in views[("GET", "/api/admin/users")]["query"]] == [
        "after", "limit", "email", "plan", "role", "disabled"]
    assert "url" in {f["name"] for f in views[("POST", "/api/admin/servers")]["fields"]}
