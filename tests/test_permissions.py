"""Who may call what: every endpoint of the API against every kind of caller, exact codes.

The rules: a missing, invalid, expired or revoked token, or a deactivated user
or agent → 401; a valid token without the right → 403; an object outside the caller's reach → 404.
Admins may do everything. Members see only the channels an admin granted them (with their chats,
messages and agent links) and manage only themselves; every user reads the canned responses, only
admins write them. Agents see only chats they have an active link to (read the chat, read and
post messages, read its agent links); everything else is 403.
Inbound webhooks ignore bearer tokens: without the platform's signature they are 403 for anyone.

`MATRIX` lists every (method, path) of the OpenAPI schema; `test_matrix_covers_every_endpoint`
fails when an endpoint is added without a row here. Each caller gets one test that builds a fresh
world, walks the whole matrix in order (destructive calls last, logout very last) and reports
every cell that differs in one table.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx2
import pytest
from sqlalchemy import select, update

from agenthub.app import create_app
from agenthub.hub import Hub
from agenthub.models import ApiToken, CannedResponse, ChatAgentLink, Platform, Role, utcnow
from agenthub.security import hash_token
from agenthub.settings import Settings
from tests.conftest import Caller
from tests.factories import make_agent, make_channel, make_chat

# At module level (see conftest): keeps the SQLite/PostgreSQL parametrization of `client`.
pytestmark = pytest.mark.anyio

# Endpoints anyone may call without a bearer token; everything else must be in MATRIX.
UNAUTHENTICATED = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("POST", "/auth/signup"),
    ("POST", "/auth/login"),
    ("POST", "/auth/session"),
}

# Callers whose answers the table spells out, in column order.
LIVE = ("admin", "member_with_access", "member_without_access", "agent_linked", "agent_not_linked")
# A caller that must be treated exactly like another column.
SAME_AS = {"agent_link_paused": "agent_not_linked"}
# Callers that must get 401 from every endpoint.
LOCKED_OUT = (
    "anonymous",
    "invalid_token",
    "expired_token",
    "revoked_token",
    "deactivated_user",
    "deactivated_agent",
    "revoked_agent_token",
)
CALLERS = (*LIVE, *SAME_AS, *LOCKED_OUT)
# Refused before any query that differs between the databases (no token, a token that matches no
# row, a column that says no): their PostgreSQL copies would repeat the SQLite ones. The live
# callers (channel grants, agent links) and the expired token (a timestamp comparison) run on both.
# The columns that repeat another's queries on PostgreSQL (an admin and a member without the
# grant take the same paths as the member with it and an unlinked agent) run on SQLite only too;
# every endpoint's allowed calls still run on PostgreSQL in the API fuzzer's round there.
REFUSED_ALIKE = {
    "anonymous",
    "invalid_token",
    "revoked_agent_token",
    "deactivated_agent",
    "revoked_token",
    "deactivated_user",
    "admin",
    "member_without_access",
    "agent_link_paused",
}

SELF = "<the caller's own id>"


@dataclass(frozen=True)
class Row:
    method: str
    path: str
    expected: tuple[int, ...]  # one code per LIVE caller
    body: Any = None
    args: Mapping[str, str] = field(default_factory=dict)  # overrides of the world's path ids
    note: str = ""
    locked_out: int = 401  # the code for every LOCKED_OUT caller

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}" + (f" ({self.note})" if self.note else "")


def row(
    endpoint: str,
    *expected: int,
    body: Any = None,
    note: str = "",
    locked_out: int = 401,
    **args: str,
) -> Row:
    method, path = endpoint.split(" ")
    assert len(expected) == len(LIVE), f"{endpoint}: need one code per live caller"
    return Row(method, path, expected, body, args, note, locked_out)


NEW_USER = {"username": "newcomer", "password": "a-long-password", "role": "MEMBER"}
NEW_AGENT = {"name": "new-bot", "webhook_url": "https://93.184.216.34/agent"}
NEW_CHANNEL = {"name": "web", "platform": "api"}
INBOUND = {"contact_id": "+15550009999", "message_id": "ext-1", "content": "hello"}
NEW_CANNED = {"shortcut": "new-answer", "content": "A new ready answer"}

# Path ids default to the world's channel, chat, "other" member, "spare" agent and its token,
# and its canned response.
# Order matters: each caller walks the rows top to bottom on one world, so rows that destroy
# something come after every row that needs it, and logout (which revokes the caller's own
# token) comes last. Columns: admin, member_with_access, member_without_access, agent_linked,
# agent_not_linked (agent_link_paused is checked against the last; LOCKED_OUT always get 401).
#
#                                                        admin m_in m_out a_in a_out
MATRIX: tuple[Row, ...] = (
    # -- users ---------------------------------------------------------------------------
    row("GET /auth/me",                                     200, 200, 200, 403, 403),
    row("GET /auth/users",                                  200, 403, 403, 403, 403),
    row("POST /auth/users",                                 201, 403, 403, 403, 403,
        body=NEW_USER),
    row("GET /auth/users/{user_id}",                        200, 403, 403, 403, 403,
        note="another user"),
    row("GET /auth/users/{user_id}",                        200, 200, 200, 403, 403,
        note="itself", user_id=SELF),
    row("PATCH /auth/users/{user_id}",                      200, 403, 403, 403, 403,
        note="another user", body={"email": "other@example.com"}),
    row("PATCH /auth/users/{user_id}",                      200, 200, 200, 403, 403,
        note="own email", body={"email": "me@example.com"}, user_id=SELF),
    row("PATCH /auth/users/{user_id}",                      200, 403, 403, 403, 403,
        note="own role", body={"role": "ADMIN"}, user_id=SELF),
    row("PATCH /auth/users/{user_id}",                      200, 403, 403, 403, 403,
        note="own is_active", body={"is_active": True}, user_id=SELF),
    # -- agents and their tokens ---------------------------------------------------------
    row("GET /auth/agents",                                 200, 403, 403, 403, 403),
    row("POST /auth/agents",                                201, 403, 403, 403, 403,
        body=NEW_AGENT),
    row("GET /auth/agents/{agent_id}",                      200, 403, 403, 403, 403),
    row("PATCH /auth/agents/{agent_id}",                    200, 403, 403, 403, 403,
        body={"name": "renamed-bot"}),
    row("POST /auth/agents/{agent_id}/tokens",              201, 403, 403, 403, 403,
        body={"name": "ci"}),
    row("GET /auth/agents/{agent_id}/tokens",               200, 403, 403, 403, 403),
    row("POST /auth/agents/{agent_id}/test-delivery",       200, 403, 403, 403, 403,
        note="its URL refuses: reported, not an error"),
    row("POST /auth/agents/{agent_id}/webhook-secret",      200, 403, 403, 403, 403,
        body={"grace_hours": 1}),
    # -- canned responses: users read, admins write --------------------------------------
    row("GET /canned-responses",                            200, 200, 200, 403, 403),
    row("POST /canned-responses",                           201, 403, 403, 403, 403,
        body=NEW_CANNED),
    row("PATCH /canned-responses/{canned_response_id}",     200, 403, 403, 403, 403,
        body={"content": "Changed answer"}),
    # -- channels ------------------------------------------------------------------------
    row("GET /channels",                                    200, 200, 200, 403, 403),
    row("POST /channels",                                   201, 403, 403, 403, 403,
        body=NEW_CHANNEL),
    row("GET /channels/{channel_id}",                       200, 200, 404, 403, 403),
    row("PATCH /channels/{channel_id}",                     200, 403, 403, 403, 403,
        body={"name": "renamed"}),
    row("GET /channels/{channel_id}/members",               200, 403, 403, 403, 403),
    row("POST /channels/{channel_id}/members/{user_id}",    204, 403, 403, 403, 403),
    row("GET /channels/{channel_id}/chats",                 200, 200, 404, 403, 403),
    row("GET /channels/{channel_id}/media/{media_id}",      400, 400, 404, 400, 404,
        note="api channel: no media proxy", media_id="file-1"),
    row("POST /channels/{channel_id}/secret",               200, 403, 403, 403, 403,
        body={"grace_hours": 1}),
    row("POST /channels/{channel_id}/register-webhook",     400, 403, 403, 403, 403,
        note="api channel: configured by hand"),
    row("GET /channels/{channel_id}/templates",             422, 422, 404, 403, 403,
        note="api channel: no templates"),
    row("POST /channels/{channel_id}/conversations",        201, 201, 404, 403, 403,
        body={"to": "+15550008888", "content": "hello first"}),
    # -- chats, messages, agent links ----------------------------------------------------
    row("GET /chats/{chat_id}",                             200, 200, 404, 200, 404),
    row("PATCH /chats/{chat_id}",                           200, 200, 404, 403, 403,
        body={"name": "Ana B."}),
    row("GET /chats/{chat_id}/messages",                    200, 200, 404, 200, 404),
    row("POST /chats/{chat_id}/messages",                   201, 201, 404, 201, 404,
        body={"content": "hi"}),
    row("POST /chats/{chat_id}/messages/{message_id}/retry", 404, 404, 404, 404, 404,
        note="no such message", message_id="msg_0000000000"),
    row("POST /chats/{chat_id}/messages/{message_id}/reactions", 404, 404, 404, 404, 404,
        note="no such message", message_id="msg_0000000000", body={"emoji": "👍"}),
    row("POST /chats/{chat_id}/typing",                     202, 202, 404, 202, 404),
    row("GET /chats/{chat_id}/agents",                      200, 200, 404, 200, 404),
    row("POST /chats/{chat_id}/agents",                     201, 201, 404, 403, 403,
        body={"agent_id": "{agent_id}"}),
    row("PATCH /chats/{chat_id}/agents/{agent_id}",         200, 200, 404, 403, 403,
        body={"active": False}),
    row("GET /chats/{chat_id}/deliveries",                  200, 403, 403, 403, 403),
    # -- operators: users only (agents 403 before any lookup) -------------------------------
    row("GET /inbox",                                       200, 200, 200, 403, 403),
    row("GET /inbox/counts",                                200, 200, 200, 403, 403),
    row("POST /chats/{chat_id}/read",                       200, 200, 404, 403, 403),
    row("POST /chats/{chat_id}/notes",                      201, 201, 404, 403, 403,
        body={"content": "a private note"}),
    row("GET /chats/{chat_id}/timeline",                    200, 200, 404, 403, 403),
    row("POST /chats/{chat_id}/takeover",                   200, 200, 404, 403, 403),
    row("POST /chats/{chat_id}/handback",                   200, 200, 404, 403, 403),
    # -- the audit trail: admins only ----------------------------------------------------
    row("GET /audit",                                       200, 403, 403, 403, 403),
    # -- inbound webhooks: only the platform's signature counts, never a bearer token ----
    row("GET /webhooks/{platform}/{channel_id}",            405, 405, 405, 405, 405,
        note="api has no handshake", locked_out=405),
    row("POST /webhooks/{platform}/{channel_id}",           403, 403, 403, 403, 403,
        note="unsigned", body=INBOUND, locked_out=403),
    row("POST /webhooks/{platform}/{channel_id}/status",    403, 403, 403, 403, 403,
        note="unsigned", body=INBOUND, locked_out=403),
    # -- destructive, last ---------------------------------------------------------------
    row("DELETE /chats/{chat_id}/agents/{agent_id}",        204, 204, 404, 403, 403),
    row("DELETE /channels/{channel_id}/members/{user_id}",  204, 403, 403, 403, 403),
    row("DELETE /auth/agents/{agent_id}/tokens/{token_id}", 204, 403, 403, 403, 403),
    row("GET /deliveries/{delivery_id}",                    404, 403, 403, 403, 403,
        note="no such delivery", delivery_id="dlv_missing000"),
    row("POST /deliveries/{delivery_id}/retry",             404, 403, 403, 403, 403,
        note="no such delivery", delivery_id="dlv_missing000"),
    row("POST /auth/agents/{agent_id}/recover",             202, 403, 403, 403, 403,
        body={"since": "2030-01-01T00:00:00Z", "until": "2030-01-02T00:00:00Z"}),
    row("DELETE /auth/agents/{agent_id}",                   204, 403, 403, 403, 403),
    row("DELETE /canned-responses/{canned_response_id}",    204, 403, 403, 403, 403),
    row("DELETE /auth/users/{user_id}",                     204, 403, 403, 403, 403),
    row("DELETE /chats/{chat_id}",                          204, 403, 403, 403, 403),
    row("DELETE /channels/{channel_id}",                    204, 403, 403, 403, 403),
    row("POST /auth/logout",                                204, 204, 204, 204, 204),
)  # fmt: skip


def expected_status(row: Row, caller: str) -> int:
    if caller in LOCKED_OUT:
        return row.locked_out
    return row.expected[LIVE.index(SAME_AS.get(caller, caller))]


# -- the world ---------------------------------------------------------------------------------


@dataclass
class World:
    ids: dict[str, str]  # default values of the path parameters
    callers: dict[str, Caller | None]  # None: no Authorization header


async def agent_caller(hub: Hub, *, active: bool = True) -> Caller:
    agent, raw = await make_agent(hub, name=f"bot-{uuid.uuid4().hex[:6]}", active=active)
    async with hub.db.transaction() as session:
        token_id = await session.scalar(select(ApiToken.id).where(ApiToken.agent_id == agent.id))
    assert token_id is not None
    return Caller(id=agent.id, token=raw, token_id=token_id)


async def build_world(client: httpx2.AsyncClient, hub: Hub, admin: Caller, make_user: Any) -> World:
    channel = await make_channel(hub)
    agent_linked = await agent_caller(hub)
    deactivated_agent = await agent_caller(hub, active=False)
    revoked_agent = await agent_caller(hub)
    chat = await make_chat(hub, channel, messages=3, agents=())
    async with hub.db.transaction() as session:
        session.add_all(
            ChatAgentLink(chat_id=chat.id, agent_id=a.id, active=True)
            for a in (agent_linked, deactivated_agent, revoked_agent)
        )
    agent_link_paused = await agent_caller(hub)
    async with hub.db.transaction() as session:
        session.add(ChatAgentLink(chat_id=chat.id, agent_id=agent_link_paused.id, active=False))

    spare = await agent_caller(hub)  # the agent the matrix manages (so no caller loses its token)
    other: Caller = await make_user(Role.MEMBER)  # the user the matrix manages
    async with hub.db.transaction() as session:
        canned = CannedResponse(shortcut="greet", content="Hello! How can I help?")
        session.add(canned)
        await session.flush()
        canned_response_id = canned.id

    # The locked-out users are admins granted everything, so only authentication can stop them.
    revoked: Caller = await make_user(Role.ADMIN)
    assert (await client.post("/auth/logout", headers=revoked.headers)).status_code == 204
    expired: Caller = await make_user(Role.ADMIN)
    async with hub.db.transaction() as session:
        await session.execute(
            update(ApiToken)
            .where(ApiToken.id == expired.token_id)
            .values(expires_at=utcnow() - timedelta(minutes=1))
        )
    revoke = await client.delete(
        f"/auth/agents/{revoked_agent.id}/tokens/{revoked_agent.token_id}", headers=admin.headers
    )
    assert revoke.status_code == 204, revoke.text

    return World(
        ids={
            "platform": "api",
            "channel_id": channel.id,
            "chat_id": chat.id,
            "user_id": other.id,
            "agent_id": spare.id,
            "token_id": spare.token_id,
            "canned_response_id": canned_response_id,
        },
        callers={
            "anonymous": None,
            "invalid_token": Caller(
                id=other.id, token="not-a-token-" + uuid.uuid4().hex, token_id=""
            ),
            "admin": admin,
            "member_with_access": await make_user(Role.MEMBER, channels=(channel.id,)),
            "member_without_access": await make_user(Role.MEMBER),
            "agent_linked": agent_linked,
            "agent_not_linked": await agent_caller(hub),
            "agent_link_paused": agent_link_paused,
            "expired_token": expired,
            "revoked_token": revoked,
            "deactivated_user": await make_user(Role.ADMIN, active=False),
            "deactivated_agent": deactivated_agent,
            "revoked_agent_token": revoked_agent,
        },
    )


def _fill(value: Any, ids: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return value.format_map(ids)
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    return value


async def call(
    client: httpx2.AsyncClient, world: World, caller_name: str, row: Row
) -> httpx2.Response:
    caller = world.callers[caller_name]
    ids = dict(world.ids)
    for name, value in row.args.items():
        if value != SELF:
            ids[name] = value
        elif caller is not None:
            ids[name] = caller.id  # for an agent, its agent id: still not a user it may manage
    headers = caller.headers if caller is not None else {}
    return await client.request(
        row.method, _fill(row.path, ids), json=_fill(row.body, ids), headers=headers
    )


# -- the matrix ----------------------------------------------------------------------------------


def test_matrix_covers_every_endpoint() -> None:
    settings = Settings(database_url="sqlite://", secret_key="k", _env_file=None)
    schema = create_app(settings).openapi()
    in_api = {(method.upper(), path) for path, ops in schema["paths"].items() for method in ops}
    in_matrix = {(r.method, r.path) for r in MATRIX}
    missing = sorted(in_api - in_matrix - UNAUTHENTICATED)
    stale = sorted(in_matrix - in_api)
    assert not missing, f"endpoints without a row in MATRIX: {missing}"
    assert not stale, f"MATRIX rows for endpoints the app does not have: {stale}"
    assert not (UNAUTHENTICATED - in_api), "UNAUTHENTICATED lists endpoints the app does not have"


# Callers with a successful write on something other than themselves (their own profile, logout).
MAY_CHANGE_THE_WORLD = {"admin", "member_with_access", "agent_linked"}


@pytest.mark.parametrize(
    "caller",
    [
        pytest.param(c, marks=pytest.mark.database_independent) if c in REFUSED_ALIKE else c
        for c in CALLERS
    ],
)
async def test_permission_matrix(
    client: httpx2.AsyncClient, hub: Hub, admin: Caller, make_user: Any, caller: str
) -> None:
    world = await build_world(client, hub, admin, make_user)
    before = await snapshot(client, world, admin)
    mismatches: list[tuple[str, int, int, str]] = []
    for r in MATRIX:
        response = await call(client, world, caller, r)
        want = expected_status(r, caller)
        if response.status_code != want:
            mismatches.append((r.label, want, response.status_code, response.text[:100]))
    assert not mismatches, _table(caller, mismatches)
    if caller not in MAY_CHANGE_THE_WORLD:
        # Every write of this caller was refused: the refusals must not have changed anything.
        assert await snapshot(client, world, admin) == before


async def snapshot(client: httpx2.AsyncClient, world: World, admin: Caller) -> dict[str, Any]:
    """The admin's view of everything the matrix could touch."""
    paths = (
        "/channels",
        "/channels/{channel_id}",
        "/channels/{channel_id}/members",
        "/channels/{channel_id}/chats",
        "/chats/{chat_id}",
        "/chats/{chat_id}/messages",
        "/chats/{chat_id}/agents",
        "/auth/users/{user_id}",
        "/auth/agents",
        "/auth/agents/{agent_id}/tokens",
        "/canned-responses",
    )
    seen: dict[str, Any] = {}
    for path in paths:
        response = await client.get(path.format_map(world.ids), headers=admin.headers)
        assert response.status_code == 200, f"{path}: {response.status_code} {response.text}"
        seen[path] = response.json()
    return seen


def _table(caller: str, mismatches: list[tuple[str, int, int, str]]) -> str:
    width = max(len(label) for label, *_ in mismatches)
    lines = [f"{len(mismatches)} cell(s) differ for caller {caller!r}:"]
    lines.append(f"  {'endpoint':<{width}}  want  got   answer")
    lines += [
        f"  {label:<{width}}  {want:<4}  {got:<4}  {text}" for label, want, got, text in mismatches
    ]
    return "\n".join(lines)


# -- focused checks ------------------------------------------------------------------------------


async def test_malformed_or_foreign_credentials_are_401(
    client: httpx2.AsyncClient, make_user: Any
) -> None:
    member: Caller = await make_user(Role.MEMBER)
    assert (await client.get("/auth/me", headers=member.headers)).status_code == 200
    for authorization in (
        "Bearer",
        "Bearer ",
        f"Bearer {member.token}x",
        f"Bearer {member.token[:-1]}",
        f"Token {member.token}",
        f"Basic {member.token}",
        member.token,
        f"Bearer {hash_token(member.token)}",  # the stored hash is not a credential
        f"Bearer {member.token_id}",
    ):
        response = await client.get("/auth/me", headers={"Authorization": authorization})
        assert response.status_code == 401, f"{authorization!r}: {response.status_code}"
        assert response.headers.get("www-authenticate", "").lower().startswith("bearer")
        assert "detail" in response.json()


async def test_member_cannot_delete_or_promote_itself(
    client: httpx2.AsyncClient, admin: Caller, make_user: Any
) -> None:
    member: Caller = await make_user(Role.MEMBER)
    h = member.headers
    assert (await client.delete(f"/auth/users/{member.id}", headers=h)).status_code == 403
    for change in (
        {"role": "ADMIN"},
        {"is_active": False},
        {"email": "m@example.com", "role": "ADMIN"},
    ):
        response = await client.patch(f"/auth/users/{member.id}", json=change, headers=h)
        assert response.status_code == 403, f"{change}: {response.status_code}"
    me = await client.get("/auth/me", headers=h)
    assert me.status_code == 200
    assert (me.json()["role"], me.json()["is_active"], me.json()["email"]) == ("MEMBER", True, None)


async def test_member_sees_nothing_of_channels_it_was_not_granted(
    client: httpx2.AsyncClient, hub: Hub, admin: Caller, make_user: Any
) -> None:
    granted = await make_channel(hub, name="granted")
    hidden = await make_channel(hub, name="hidden")
    visible_chat = await make_chat(hub, granted, external_id="+15550000001", messages=2)
    hidden_chat = await make_chat(hub, hidden, external_id="+15550000002", messages=2)
    member: Caller = await make_user(Role.MEMBER, channels=(granted.id,))
    h = member.headers

    listed = await client.get("/channels", headers=h)
    assert listed.status_code == 200
    assert [c["id"] for c in listed.json()] == [granted.id]
    assert (await client.get(f"/channels/{hidden.id}", headers=h)).status_code == 404
    assert (await client.get(f"/channels/{hidden.id}/chats", headers=h)).status_code == 404
    assert (await client.get(f"/channels/{hidden.id}/chats?q=5555", headers=h)).status_code == 404
    chats = await client.get(f"/channels/{granted.id}/chats", headers=h)
    assert chats.status_code == 200
    assert [c["id"] for c in chats.json()["chats"]] == [visible_chat.id]
    assert chats.json()["total_count"] == 1

    for method, path, body in (
        ("GET", f"/chats/{hidden_chat.id}", None),
        ("PATCH", f"/chats/{hidden_chat.id}", {"name": "x"}),
        ("GET", f"/chats/{hidden_chat.id}/messages", None),
        ("POST", f"/chats/{hidden_chat.id}/messages", {"content": "hi"}),
        ("GET", f"/chats/{hidden_chat.id}/agents", None),
    ):
        response = await client.request(method, path, json=body, headers=h)
        assert response.status_code == 404, (
            f"{method} {path}: {response.status_code} {response.text}"
        )
    assert (await client.get(f"/chats/{visible_chat.id}/messages", headers=h)).status_code == 200

    # Nothing was written through the refused POST.
    messages = await client.get(f"/chats/{hidden_chat.id}/messages", headers=admin.headers)
    assert [m["content"] for m in messages.json()["messages"]] == ["message 1", "message 0"]

    # Withdrawing the grant takes effect at once.
    removed = await client.delete(
        f"/channels/{granted.id}/members/{member.id}", headers=admin.headers
    )
    assert removed.status_code == 204
    assert (await client.get("/channels", headers=h)).json() == []
    assert (await client.get(f"/chats/{visible_chat.id}", headers=h)).status_code == 404


TWILIO_CREDENTIALS = {
    "account_sid": "AC3f6d2a9b8c7e4f1a0b9c8d7e6f5a4b3c",
    "auth_token": "9b1f4e7c2d8a6b3f0e5c1d9a7b4e2f80",
    "from_number": "whatsapp:+14155238886",
}


def assert_masked(channel: dict[str, Any], secrets: Mapping[str, str], text: str) -> None:
    assert set(channel["credentials"]) == set(secrets)
    for key, value in channel["credentials"].items():
        assert isinstance(value, str) and set(value) <= {"*"}, (
            f"credentials.{key} is not masked: {value!r}"
        )
    for key, secret in secrets.items():
        assert secret not in text, f"the value of credentials.{key} appears in the answer"


async def test_channel_answers_never_contain_credential_values(
    client: httpx2.AsyncClient, admin: Caller
) -> None:
    body = {"name": "whatsapp", "platform": "whatsapp_twilio", "credentials": TWILIO_CREDENTIALS}
    created = await client.post("/channels", json=body, headers=admin.headers)
    assert created.status_code == 201, created.text
    channel_id = created.json()["id"]
    assert_masked(created.json(), TWILIO_CREDENTIALS, created.text)

    one = await client.get(f"/channels/{channel_id}", headers=admin.headers)
    assert one.status_code == 200
    assert_masked(one.json(), TWILIO_CREDENTIALS, one.text)

    listed = await client.get("/channels", headers=admin.headers)
    assert listed.status_code == 200
    [item] = [c for c in listed.json() if c["id"] == channel_id]
    assert_masked(item, TWILIO_CREDENTIALS, listed.text)

    rotated = {**TWILIO_CREDENTIALS, "auth_token": "0f1e2d3c4b5a69788796a5b4c3d2e1f0"}
    patched = await client.patch(
        f"/channels/{channel_id}",
        json={"credentials": {"auth_token": rotated["auth_token"]}},
        headers=admin.headers,
    )
    assert patched.status_code == 200, patched.text
    assert_masked(patched.json(), rotated, patched.text)
    assert TWILIO_CREDENTIALS["auth_token"] not in patched.text


async def test_api_channel_secret_is_shown_once_then_masked(
    client: httpx2.AsyncClient, admin: Caller
) -> None:
    created = await client.post(
        "/channels", json={"name": "web", "platform": "api"}, headers=admin.headers
    )
    assert created.status_code == 201, created.text
    secret = created.json()["credentials"]["secret"]
    assert secret.startswith("whsec_")
    again = await client.get(f"/channels/{created.json()['id']}", headers=admin.headers)
    assert_masked(again.json(), {"secret": secret}, again.text)

    given = "whsec_" + "A" * 40
    body = {"name": "web2", "platform": "api", "credentials": {"secret": given}}
    chosen = await client.post("/channels", json=body, headers=admin.headers)
    assert chosen.status_code == 201, chosen.text
    assert_masked(chosen.json(), {"secret": given}, chosen.text)


async def test_member_cannot_read_credentials_at_all(
    client: httpx2.AsyncClient, hub: Hub, admin: Caller, make_user: Any
) -> None:
    body = {"name": "whatsapp", "platform": "whatsapp_twilio", "credentials": TWILIO_CREDENTIALS}
    created = await client.post("/channels", json=body, headers=admin.headers)
    assert created.status_code == 201, created.text
    channel_id = created.json()["id"]
    member: Caller = await make_user(Role.MEMBER, channels=(channel_id,))
    agent = await agent_caller(hub)
    h = member.headers

    one = await client.get(f"/channels/{channel_id}", headers=h)
    assert one.status_code == 200
    assert_masked(one.json(), TWILIO_CREDENTIALS, one.text)
    listed = await client.get("/channels", headers=h)
    assert listed.status_code == 200
    [item] = listed.json()
    assert_masked(item, TWILIO_CREDENTIALS, listed.text)

    # No way around it: neither editing, nor listing members, nor an agent token.
    rotate = await client.patch(
        f"/channels/{channel_id}", json={"credentials": {"auth_token": "x" * 32}}, headers=h
    )
    assert rotate.status_code == 403
    assert (await client.get(f"/channels/{channel_id}/members", headers=h)).status_code == 403
    assert (await client.get(f"/channels/{channel_id}", headers=agent.headers)).status_code == 403
    assert (await client.get("/channels", headers=agent.headers)).status_code == 403

    # The refused PATCH changed nothing: the stored credentials are the original ones.
    from agenthub.models import Channel

    async with hub.db.transaction() as session:
        stored = await session.get(Channel, channel_id)
        assert stored is not None
        assert hub.secrets.decrypt_json(stored.credentials_encrypted) == TWILIO_CREDENTIALS


@pytest.mark.parametrize(
    ("platform", "credentials"),
    [
        (
            "telegram",
            {
                "bot_token": "7311234567:AAHk3vXJ9mQ2pL8nR4sT6uW0yZ1aB3cD5eF",
                "secret_token": "tg-s3cr3t-2fa9",
            },
        ),
        (
            "whatsapp_cloud",
            {
                "access_token": "EAAGm0PX4ZCpsBAKZAZBq1ZCd9ZAZAZBfZAqwerty12345",
                "phone_number_id": "106540352242922",
                "app_secret": "c0ffee1234567890deadbeefcafebabe",
                "verify_token": "verify-me-7f3a",
            },
        ),
        ("whapi", {"token": "whapi-T0k3n-9f8e7d6c5b4a", "webhook_secret": "wh-s3cr3t-1a2b3c"}),
    ],
)
async def test_other_platforms_mask_credentials_too(
    client: httpx2.AsyncClient, admin: Caller, platform: str, credentials: dict[str, str]
) -> None:
    body = {"name": platform, "platform": platform, "credentials": credentials}
    created = await client.post("/channels", json=body, headers=admin.headers)
    assert created.status_code == 201, created.text
    assert_masked(created.json(), credentials, created.text)
    one = await client.get(f"/channels/{created.json()['id']}", headers=admin.headers)
    assert_masked(one.json(), credentials, one.text)
    assert Platform(one.json()["platform"]) == Platform(platform)


async def test_agent_reaches_only_its_chats_not_their_whole_channel(
    client: httpx2.AsyncClient, hub: Hub
) -> None:
    channel = await make_channel(hub)
    agent = await agent_caller(hub)
    mine = await make_chat(hub, channel, external_id="+15550000001", messages=1)
    neighbour = await make_chat(hub, channel, external_id="+15550000002", messages=1)
    async with hub.db.transaction() as session:
        session.add(ChatAgentLink(chat_id=mine.id, agent_id=agent.id, active=True))
    h = agent.headers

    assert (await client.get(f"/chats/{mine.id}/messages", headers=h)).status_code == 200
    for method, path, body in (
        ("GET", f"/chats/{neighbour.id}", None),
        ("GET", f"/chats/{neighbour.id}/messages", None),
        ("POST", f"/chats/{neighbour.id}/messages", {"content": "hi"}),
        ("GET", f"/chats/{neighbour.id}/agents", None),
    ):
        response = await client.request(method, path, json=body, headers=h)
        assert response.status_code == 404, f"{method} {path}: {response.status_code}"
    assert (await client.get(f"/channels/{channel.id}/chats", headers=h)).status_code == 403

    # Pausing the link takes the chat away at once.
    async with hub.db.transaction() as session:
        await session.execute(
            update(ChatAgentLink).where(ChatAgentLink.agent_id == agent.id).values(active=False)
        )
    assert (await client.get(f"/chats/{mine.id}", headers=h)).status_code == 404
