"""Group commit for inbound webhooks: one transaction stores every webhook that arrived while
the previous one was committing.

A transaction has a fixed cost (on SQLite, the write lock, `BEGIN IMMEDIATE`, the commit and a
thread hop per statement) that dwarfs the few rows one message writes. So webhook requests do
not open their own: each puts its request on the intake's queue and waits. A single writer task
takes everything queued (up to `MAX_BATCH`), checks each webhook's channel and signature, stores
the whole batch with set-based statements and commits once; then every waiting request gets its
answer. Under light load a batch is one webhook and nothing waits; under heavy load the batches
grow, so the cost per webhook falls as the rate rises.

A webhook's answer still means "stored" (or refused): a request is only acknowledged after the
commit that holds its message. If a batch fails as a whole, its webhooks are retried one by one,
so one bad webhook never fails the others. Platform calls a webhook asks for once stored
(`Inbound.follow_ups`: Telegram's `answerCallbackQuery`) run after the commit, in the
background, and never hold up or fail the answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from fastapi import Response
from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub import metrics
from agenthub.delivery.outbound import apply_status
from agenthub.errors import Forbidden, NotFound
from agenthub.hub import Hub
from agenthub.models import Base, Channel
from agenthub.platforms.base import (
    ChannelContext,
    FollowUp,
    FollowUpCaller,
    Inbound,
    PlatformAdapter,
    WebhookRequest,
    parse_inbound,
)
from agenthub.uow import commit
from agenthub.webhooks.service import Arrival, apply_reactions, store_contact_messages

log = logging.getLogger(__name__)

MAX_BATCH = 64
Credentials = Callable[[str], dict[str, Any]]  # ciphertext → the channel's credentials
CHANNELS = Base.metadata.tables[Channel.__tablename__]
CHANNELS_BY_ID = select(
    CHANNELS.c.id, CHANNELS.c.platform, CHANNELS.c.is_active, CHANNELS.c.credentials_encrypted
).where(CHANNELS.c.id.in_(bindparam("channel_ids", expanding=True)))


@dataclass
class ReceivedWebhook:
    adapter: PlatformAdapter
    channel_id: str
    request: WebhookRequest
    received_at: datetime
    answer: asyncio.Future[Response]


class WebhookIntake:
    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        self._queue: deque[ReceivedWebhook] = deque()
        self._writer: asyncio.Task[None] | None = None
        # Decrypted channel credentials by ciphertext: a changed credential is a new ciphertext,
        # so this never answers with an old one (and Fernet costs ~30 µs a call).
        self._credentials: Credentials = lru_cache(maxsize=1024)(hub.secrets.decrypt_json)

    async def submit(
        self, adapter: PlatformAdapter, channel_id: str, request: WebhookRequest
    ) -> Response:
        """Store the webhook's content (in the next batch) and return the platform's answer;
        raises NotFound / Forbidden / a parse error for this webhook alone."""
        answer: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._queue.append(ReceivedWebhook(adapter, channel_id, request, self._hub.clock(), answer))
        if self._writer is None or self._writer.done():
            # The writer runs while there is work and then ends, so there is nothing to stop
            # at shutdown beyond what `Hub.close` waits for anyway.
            self._writer = self._hub.spawn(self._drain())
        return await answer

    async def _drain(self) -> None:
        await asyncio.sleep(0)  # let requests already parsed in this loop turn join the batch
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(MAX_BATCH, len(self._queue)))]
            try:
                await self._store(batch)
            except BaseException as exc:  # cancelled at shutdown: leave nobody waiting
                _fail([*batch, *self._queue], exc)
                self._queue.clear()
                raise

    async def _store(self, batch: list[ReceivedWebhook], retries: int = 1) -> None:
        try:
            outcomes = await ingest_batch(self._hub, batch, self._credentials)
        except Exception as exc:
            race = isinstance(exc, IntegrityError | OperationalError)
            if len(batch) > 1:
                # One webhook may have failed them all, or another process stored one of these
                # messages first: each alone (it then sees the duplicate).
                if not race:
                    log.warning("inbound batch failed (%s); storing its webhooks one by one", exc)
                for webhook in batch:
                    await self._store([webhook])
            elif race and retries > 0:  # a deadlock or a lost race, once more
                await self._store(batch, retries - 1)
            else:
                _fail(batch, exc)
            return
        for webhook, outcome in zip(batch, outcomes, strict=True):
            if webhook.answer.done():  # the client went away; its message is stored anyway
                continue
            if isinstance(outcome, Exception):
                webhook.answer.set_exception(outcome)
            else:
                webhook.answer.set_result(outcome)


def _fail(batch: list[ReceivedWebhook], exc: BaseException) -> None:
    for webhook in batch:
        if not webhook.answer.done():
            webhook.answer.set_exception(
                exc if isinstance(exc, Exception) else RuntimeError("hub shutting down")
            )


async def ingest_batch(
    hub: Hub, batch: Sequence[ReceivedWebhook], credentials: Credentials
) -> list[Response | Exception]:
    """One transaction for the batch: each webhook's answer, or the error refusing it alone."""
    async with hub.db.session() as session:
        channels = await _channels(session, {webhook.channel_id for webhook in batch})
        outcomes: list[Response | Exception] = []
        arrivals: list[Arrival] = []
        inbounds: list[tuple[ReceivedWebhook, Inbound]] = []
        parsed: list[Inbound | None] = []  # by webhook, for the metrics
        for webhook in batch:
            try:
                inbound = _verified_inbound(webhook, channels.get(webhook.channel_id), credentials)
            except Exception as exc:  # refused or unparseable: this webhook only
                outcomes.append(exc)
                parsed.append(None)
                continue
            outcomes.append(webhook.adapter.acknowledge())
            parsed.append(inbound)
            inbounds.append((webhook, inbound))
            arrivals += [
                Arrival(webhook.channel_id, m, webhook.received_at) for m in inbound.messages
            ]
        stored = await store_contact_messages(session, hub, arrivals) if arrivals else []
        for webhook, inbound in inbounds:
            for update in inbound.statuses:
                await apply_status(
                    session,
                    hub,
                    webhook.channel_id,
                    update.external_id,
                    update.status,
                    update.error,
                )
            if inbound.reactions:
                await apply_reactions(
                    session, hub, webhook.channel_id, inbound.reactions, webhook.received_at
                )
        await commit(session)
    _count(batch, outcomes, parsed, stored)  # once committed: a failed batch is retried
    for webhook, inbound in inbounds:
        if inbound.follow_ups:
            secrets = credentials(channels[webhook.channel_id].credentials_encrypted)
            hub.spawn(_follow_up(hub, webhook, inbound.follow_ups, secrets))
    return outcomes


async def _follow_up(
    hub: Hub, webhook: ReceivedWebhook, calls: list[FollowUp], secrets: dict[str, Any]
) -> None:
    """The platform calls a stored webhook asks for (Telegram's `answerCallbackQuery`), in
    the background, once it is committed: the platform's answer waits for none of them, and
    one failing is logged and forgotten (the platform copes without it)."""
    adapter = webhook.adapter
    if not isinstance(adapter, FollowUpCaller):
        return
    try:
        async with hub.db.session() as session:
            channel = await session.get(Channel, webhook.channel_id)
        if channel is None:
            return
        context = ChannelContext(
            channel=channel,
            credentials=secrets,
            public_url=hub.settings.effective_public_url,
            settings=hub.settings,
        )
        for call in calls:
            try:
                await adapter.follow_up(hub.http, context, call)
            except Exception as exc:
                log.info("%s: %s failed: %s", adapter.name, call.method, exc)
    except Exception:
        log.exception("%s: follow-up calls failed", adapter.name)


def _count(
    batch: Sequence[ReceivedWebhook],
    outcomes: list[Response | Exception],
    parsed: list[Inbound | None],
    stored: list[dict[str, Any] | None],
) -> None:
    rows = iter(stored)  # one per message, in the batch's order
    for webhook, outcome, inbound in zip(batch, outcomes, parsed, strict=True):
        metrics.inbound(webhook.adapter.name, _outcome(outcome, inbound, rows))


def _outcome(outcome: Response | Exception, inbound: Inbound | None, rows: Iterator[Any]) -> str:
    if isinstance(outcome, NotFound):
        return "not_found"
    if isinstance(outcome, Forbidden):
        return "bad_signature"
    if isinstance(outcome, Exception) or inbound is None:
        return "invalid"
    if inbound.messages:
        fresh = [next(rows) is not None for _ in inbound.messages]
        return "stored" if any(fresh) else "duplicate"
    # status callbacks and reactions are applied
    return "stored" if inbound.statuses or inbound.reactions else "ignored"


async def _channels(session: AsyncSession, channel_ids: set[str]) -> dict[str, Any]:
    rows = await session.execute(CHANNELS_BY_ID, {"channel_ids": sorted(channel_ids)})
    return {row.id: row for row in rows}


def _verified_inbound(webhook: ReceivedWebhook, channel: Any, credentials: Credentials) -> Inbound:
    if channel is None or channel.platform != webhook.adapter.name or not channel.is_active:
        raise NotFound("Channel not found")
    secrets = credentials(channel.credentials_encrypted)
    if not webhook.adapter.verify(webhook.request, secrets):
        raise Forbidden("Invalid or missing signature")
    return parse_inbound(webhook.adapter, webhook.request, secrets)
