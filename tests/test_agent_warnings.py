"""Two agents may share a name, but the answer that makes it so warns about it."""

from __future__ import annotations

import httpx2
import pytest

from tests.conftest import Caller

pytestmark = pytest.mark.anyio


async def create(client: httpx2.AsyncClient, admin: Caller, name: str) -> httpx2.Response:
    answer = await client.post(
        "/auth/agents",
        json={"name": name, "webhook_url": "http://127.0.0.1:9/"},
        headers=admin.headers,
    )
    assert answer.status_code == 201, answer.text
    return answer


async def test_a_shared_name_is_allowed_with_a_warning(
    client: httpx2.AsyncClient, admin: Caller
) -> None:
    first = await create(client, admin, "Sales")
    assert first.json()["warnings"] == []
    first_id = first.json()["id"]

    second = await create(client, admin, "  sales ")  # stored stripped; compared ignoring case
    assert second.json()["name"] == "sales"
    assert second.json()["warnings"] == [f"another agent is named 'Sales' ({first_id})"]
    second_id = second.json()["id"]

    support = await create(client, admin, "Support")
    url = f"/auth/agents/{support.json()['id']}"
    renamed = await client.patch(url, json={"name": "SALES"}, headers=admin.headers)
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["name"] == "SALES"
    assert renamed.json()["warnings"] == [
        f"another agent is named 'Sales' ({first_id})",
        f"another agent is named 'sales' ({second_id})",
    ]

    # Only a rename warns; the name is not re-checked on every change.
    for body in ({"timeout_seconds": 5}, {"name": "SALES"}):
        again = await client.patch(url, json=body, headers=admin.headers)
        assert again.status_code == 200 and again.json()["warnings"] == [], again.text
    assert "warnings" not in (await client.get(url, headers=admin.headers)).json()
    unique = await client.patch(url, json={"name": "Support"}, headers=admin.headers)
    assert unique.json()["warnings"] == []


async def test_the_warning_is_documented(client: httpx2.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    for method, path in (("post", "/auth/agents"), ("patch", "/auth/agents/{agent_id}")):
        operation = document["paths"][path][method]
        assert "warnings" in operation["description"], method
        answer = operation["responses"]["201" if method == "post" else "200"]
        ref = answer["content"]["application/json"]["schema"]["$ref"]
        model = document["components"]["schemas"][ref.rsplit("/", 1)[1]]
        assert "another agent is named" in model["properties"]["warnings"]["description"]
