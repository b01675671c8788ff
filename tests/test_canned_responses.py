"""Canned responses: ready answers operators insert with `/shortcut`.

Users (admins and members) list and search them; only admins create, change and delete them.
Who may call what is also in tests/test_permissions.py.
"""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from agenthub.hub import Hub
from agenthub.models import Role
from agenthub.operators.canned import service
from tests.conftest import Caller
from tests.factories import make_agent

pytestmark = pytest.mark.anyio

URL = "/canned-responses"


async def create(
    client: httpx2.AsyncClient, admin: Caller, shortcut: str, content: str
) -> dict[str, Any]:
    response = await client.post(
        URL, json={"shortcut": shortcut, "content": content}, headers=admin.headers
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def shortcuts(client: httpx2.AsyncClient, caller: Caller, **params: Any) -> list[str]:
    response = await client.get(URL, params=params, headers=caller.headers)
    assert response.status_code == 200, response.text
    return [item["shortcut"] for item in response.json()]


async def test_create_read_update_delete(client: httpx2.AsyncClient, admin: Caller) -> None:
    created = await create(client, admin, "greet", "  Hello! How can I help?\n")
    assert set(created) == {"id", "shortcut", "content", "created_at", "updated_at"}
    assert created["id"].startswith("cnd_")
    assert created["shortcut"] == "greet"
    assert created["content"] == "Hello! How can I help?"  # stripped
    assert created["updated_at"] == created["created_at"]

    listed = await client.get(URL, headers=admin.headers)
    assert listed.status_code == 200
    assert listed.json() == [created]

    path = f"{URL}/{created['id']}"
    changed = await client.patch(path, json={"content": "Hi there!"}, headers=admin.headers)
    assert changed.status_code == 200, changed.text
    assert changed.json()["content"] == "Hi there!"
    assert changed.json()["shortcut"] == "greet"
    assert changed.json()["created_at"] == created["created_at"]
    assert changed.json()["updated_at"] >= created["updated_at"]

    renamed = await client.patch(path, json={"shortcut": "hello"}, headers=admin.headers)
    assert renamed.status_code == 200, renamed.text
    assert (renamed.json()["shortcut"], renamed.json()["content"]) == ("hello", "Hi there!")

    both = await client.patch(
        path, json={"shortcut": "hi", "content": "Hey!"}, headers=admin.headers
    )
    assert both.status_code == 200, both.text
    assert (both.json()["shortcut"], both.json()["content"]) == ("hi", "Hey!")

    # Nothing given, or the same shortcut again: no change, no conflict with itself.
    for body in ({}, {"shortcut": "hi"}, {"shortcut": None}):
        same = await client.patch(path, json=body, headers=admin.headers)
        assert same.status_code == 200, f"{body}: {same.text}"
        assert (same.json()["shortcut"], same.json()["content"]) == ("hi", "Hey!")

    assert (await client.delete(path, headers=admin.headers)).status_code == 204
    assert await shortcuts(client, admin) == []
    assert (await client.delete(path, headers=admin.headers)).status_code == 404
    assert (await client.patch(path, json={}, headers=admin.headers)).status_code == 404


async def test_unknown_ids_are_404(client: httpx2.AsyncClient, admin: Caller) -> None:
    for canned_id in ("cnd_missing000", "x" * 5000, "cnd_%00"):
        path = f"{URL}/{canned_id}"
        patched = await client.patch(path, json={"content": "x"}, headers=admin.headers)
        assert patched.status_code in (404, 422), f"{canned_id[:20]}: {patched.text}"
        deleted = await client.delete(path, headers=admin.headers)
        assert deleted.status_code in (404, 422), f"{canned_id[:20]}: {deleted.text}"
        if canned_id == "cnd_missing000":
            assert patched.status_code == deleted.status_code == 404
            assert patched.json() == {"detail": "Canned response not found"}


async def test_listed_by_shortcut_in_byte_order(client: httpx2.AsyncClient, admin: Caller) -> None:
    for shortcut in ("thanks", "a_c", "ab", "a-b", "9", "bye", "a0", "aa"):
        await create(client, admin, shortcut, f"text of {shortcut}")
    expected = ["9", "a-b", "a0", "a_c", "aa", "ab", "bye", "thanks"]
    assert await shortcuts(client, admin) == expected
    assert await shortcuts(client, admin, limit=3) == expected[:3]
    assert await shortcuts(client, admin, limit=3, offset=3) == expected[3:6]


async def test_search_matches_shortcut_or_content_ignoring_case(
    client: httpx2.AsyncClient, admin: Caller
) -> None:
    await create(client, admin, "refund", "Your REFUND is on its way.")
    await create(client, admin, "shipping", "Orders ship within 2 days.")
    await create(client, admin, "discount", "Use code SAVE10 for 10% off.")
    await create(client, admin, "hours_weekend", "We are open Saturday 9-13.")
    await create(client, admin, "hoursxweekday", "Monday to Friday, 8-18.")
    await create(client, admin, "path", "See C:\\Help\\faq.txt")

    assert await shortcuts(client, admin, q="refund") == ["refund"]
    assert await shortcuts(client, admin, q="ReFuNd") == ["refund"]  # shortcut and content
    assert await shortcuts(client, admin, q="ORDERS SHIP") == ["shipping"]  # content only
    assert await shortcuts(client, admin, q="save10") == ["discount"]
    assert await shortcuts(client, admin, q="hours") == ["hours_weekend", "hoursxweekday"]
    assert await shortcuts(client, admin, q="") == [
        "discount",
        "hours_weekend",
        "hoursxweekday",
        "path",
        "refund",
        "shipping",
    ]
    # LIKE's wildcards and its escape character are matched as themselves.
    assert await shortcuts(client, admin, q="%") == ["discount"]
    assert await shortcuts(client, admin, q="s_w") == ["hours_weekend"]  # not "sxw"
    assert await shortcuts(client, admin, q="s_") == ["hours_weekend"]
    assert await shortcuts(client, admin, q="\\help\\") == ["path"]
    assert await shortcuts(client, admin, q="nothing like it") == []


async def test_members_read_agents_do_not(
    client: httpx2.AsyncClient, hub: Hub, admin: Caller, make_user: Any
) -> None:
    created = await create(client, admin, "greet", "Hello!")
    member: Caller = await make_user(Role.MEMBER)
    agent_row, agent_token = await make_agent(hub, name="bot")
    agent = Caller(id=agent_row.id, token=agent_token, token_id="")
    path = f"{URL}/{created['id']}"

    assert await shortcuts(client, member, q="gre") == ["greet"]
    for method, url, body in (
        ("POST", URL, {"shortcut": "bye", "content": "Bye!"}),
        ("PATCH", path, {"content": "changed"}),
        ("DELETE", path, None),
    ):
        response = await client.request(method, url, json=body, headers=member.headers)
        assert response.status_code == 403, f"member {method}: {response.text}"
    for method, url, body in (
        ("GET", URL, None),
        ("POST", URL, {"shortcut": "bye", "content": "Bye!"}),
        ("PATCH", path, {"content": "changed"}),
        ("DELETE", path, None),
    ):
        response = await client.request(method, url, json=body, headers=agent.headers)
        assert response.status_code == 403, f"agent {method}: {response.text}"
    assert (await client.get(URL)).status_code == 401
    listed = await client.get(URL, headers=admin.headers)
    assert [(c["shortcut"], c["content"]) for c in listed.json()] == [("greet", "Hello!")]


BAD_BODIES: list[Any] = [
    {},
    {"shortcut": "greet"},
    {"content": "Hello"},
    {"shortcut": "", "content": "Hello"},
    {"shortcut": "Greet", "content": "Hello"},
    {"shortcut": "gr eet", "content": "Hello"},
    {"shortcut": "/greet", "content": "Hello"},
    {"shortcut": "grüß", "content": "Hello"},
    {"shortcut": "a.b", "content": "Hello"},
    {"shortcut": "x" * 33, "content": "Hello"},
    {"shortcut": "x" * 100_000, "content": "Hello"},
    {"shortcut": "gr\x00eet", "content": "Hello"},
    {"shortcut": "greet\n", "content": "Hello", "extra": 1},
    {"shortcut": "greet", "content": ""},
    {"shortcut": "greet", "content": " \n\t "},
    {"shortcut": "greet", "content": "x" * 4097},
    {"shortcut": "greet", "content": "x" * 500_000},
    {"shortcut": "greet", "content": "nul \x00 inside"},
    {"shortcut": 5, "content": "Hello"},
    {"shortcut": "greet", "content": ["Hello"]},
    {"shortcut": None, "content": None},
    {"shortcut": "greet", "content": {"text": "Hello"}},
    {"shortcut": True, "content": 1.5},
    ["greet", "Hello"],
    "greet",
    None,
]


@pytest.mark.parametrize("body", BAD_BODIES, ids=lambda b: repr(b)[:40])
async def test_invalid_input_is_422(client: httpx2.AsyncClient, admin: Caller, body: Any) -> None:
    response = await client.post(URL, json=body, headers=admin.headers)
    assert response.status_code == 422, response.text
    assert isinstance(response.json()["detail"], list)
    assert "\x00" not in response.text and "x" * 100 not in response.text  # input not echoed
    assert await shortcuts(client, admin) == []


async def test_invalid_changes_are_422_and_change_nothing(
    client: httpx2.AsyncClient, admin: Caller
) -> None:
    created = await create(client, admin, "greet", "Hello")
    path = f"{URL}/{created['id']}"
    for body in (
        {"shortcut": ""},
        {"shortcut": "UPPER"},
        {"shortcut": "x" * 33},
        {"shortcut": "a\x00"},
        {"content": ""},
        {"content": "   "},
        {"content": "x" * 4097},
        {"content": "a\x00b"},
        {"content": 7},
        {"id": "cnd_other00000"},
        {"created_at": "2020-01-01T00:00:00Z"},
        ["content", "x"],
    ):
        response = await client.patch(path, json=body, headers=admin.headers)
        assert response.status_code == 422, f"{str(body)[:40]}: {response.text}"
    listed = await client.get(URL, headers=admin.headers)
    assert listed.json() == [created]


async def test_limits_are_inclusive(client: httpx2.AsyncClient, admin: Caller) -> None:
    longest = await create(client, admin, "x" * 32, "é" * 4096)
    assert (longest["shortcut"], len(longest["content"])) == ("x" * 32, 4096)
    # Whitespace around the content does not count towards the limit.
    padded = await create(client, admin, "a", "  " + "y" * 4096 + "\n\n")
    assert padded["content"] == "y" * 4096
    shortest = await create(client, admin, " 0 ", "z")  # shortcut whitespace is trimmed too
    assert (shortest["shortcut"], shortest["content"]) == ("0", "z")
    unicode = await create(client, admin, "ola", "Olá! Tudo bem? 🙂\nAté logo.")
    assert unicode["content"] == "Olá! Tudo bem? 🙂\nAté logo."


async def test_bad_query_parameters_never_500(client: httpx2.AsyncClient, admin: Caller) -> None:
    await create(client, admin, "greet", "Hello")
    for params in (
        {"q": "\x00"},
        {"q": "x" * 201},
        {"limit": "0"},
        {"limit": "201"},
        {"limit": "many"},
        {"offset": "-1"},
    ):
        response = await client.get(URL, params=params, headers=admin.headers)
        if params == {"q": "\x00"}:  # nothing stored can contain NUL
            assert (response.status_code, response.json()) == (200, []), response.text
        else:
            assert response.status_code == 422, f"{params}: {response.text}"
    assert (await client.get(URL, params={"q": "x" * 200}, headers=admin.headers)).json() == []


async def test_duplicate_shortcut_is_409(client: httpx2.AsyncClient, admin: Caller) -> None:
    first = await create(client, admin, "greet", "Hello")
    second = await create(client, admin, "bye", "Bye")

    again = await client.post(
        URL, json={"shortcut": "greet", "content": "Hi"}, headers=admin.headers
    )
    assert again.status_code == 409, again.text
    assert again.json() == {"detail": "Shortcut 'greet' is taken"}
    padded = await client.post(
        URL, json={"shortcut": " greet ", "content": "Hi"}, headers=admin.headers
    )
    assert padded.status_code == 409, padded.text

    renamed = await client.patch(
        f"{URL}/{second['id']}", json={"shortcut": "greet"}, headers=admin.headers
    )
    assert renamed.status_code == 409, renamed.text
    assert renamed.json() == {"detail": "Shortcut 'greet' is taken"}

    listed = await client.get(URL, headers=admin.headers)
    assert listed.json() == [second, first]  # "bye" < "greet"; nothing changed


async def test_a_shortcut_taken_by_a_racing_request_is_409(
    client: httpx2.AsyncClient, admin: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two requests may both find the shortcut free; the unique constraint stops the second."""
    await create(client, admin, "greet", "Hello")
    bye = await create(client, admin, "bye", "Bye")

    async def finds_it_free(*_: Any) -> None:
        return None

    monkeypatch.setattr(service, "_ensure_shortcut_free", finds_it_free)
    created = await client.post(
        URL, json={"shortcut": "greet", "content": "Hi"}, headers=admin.headers
    )
    assert created.status_code == 409, created.text
    assert created.json() == {"detail": "Shortcut 'greet' is taken"}
    renamed = await client.patch(
        f"{URL}/{bye['id']}", json={"shortcut": "greet"}, headers=admin.headers
    )
    assert renamed.status_code == 409, renamed.text
    assert renamed.json() == {"detail": "Shortcut 'greet' is taken"}

    # The failed transactions were rolled back: the hub goes on working.
    assert await shortcuts(client, admin) == ["bye", "greet"]
    await create(client, admin, "thanks", "Thank you!")
