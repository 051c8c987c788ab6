"""Key tags: set by the owner on create and update, shown in listings, carried to routing."""

from __future__ import annotations

from .test_auth_support import api, clock, error_of, snapshot  # noqa: F401


async def test_owner_sets_tags_on_create_and_patch_and_listings_show_them(api):
    headers, _ = await api.user()
    created = await api.create_key(headers, name="batch", tags=["nightly", "batch"])
    assert created["tags"] == ["batch", "nightly"]  # stored sorted: the order carries no meaning
    plain = await api.create_key(headers, name="plain")
    assert plain["tags"] == []

    response = await api.client.patch(f"/api/keys/{created['id']}", json={"tags": ["eval"]}, headers=headers)
    assert response.status == 200, await response.text()
    assert (await response.json())["tags"] == ["eval"]

    listing = await (await api.client.get("/api/keys", headers=headers)).json()
    assert [(k["name"], k["tags"]) for k in listing["data"]] == [("batch", ["eval"]), ("plain", [])]
    principal = await api.authenticate(created["key"])
    assert principal.tags == frozenset({"eval"})


async def test_bad_tags_are_a_400_naming_the_field(api):
    headers, _ = await api.user()
    for tags, param in ((["has space"], "tags[0]"), (["ok", "x" * 33], "tags[1]"), (["a", "a"], "tags"),
                        ("batch", "tags")):
        response = await api.client.post("/api/keys", json={"name": "k", "tags": tags}, headers=headers)
        assert response.status == 400, tags
        error = await error_of(response)
        assert (error["param"], error["type"]) == (param, "invalid_request_error"), error
    response = await api.client.post("/api/keys", json={"name": "k", "tags": [str(i) for i in range(21)]},
                                     headers=headers)
    assert response.status == 400
    assert (await error_of(response))["param"] == "tags"
