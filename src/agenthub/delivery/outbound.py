"""Hub → contact: USER and AGENT messages go to the platform from an outbox."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Integer, Table, bindparam, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from agenthub import metrics, tracing
from agenthub.chats.handling import refresh_handled_by, set_needs_human
from agenthub.delivery import events
from agenthub.delivery.timing import backoff_delay
from agenthub.hub import Hub
from agenthub.models import (
    Channel,
    Chat,
    DeliveryRank,
    DeliveryStatus,
    Message,
    NeedsHumanReason,
    OutboundSend,
    OutboundStatus,
)
from agenthub.platforms import SendError, get_adapter
from agenthub.platforms.base import OutboundContext
from agenthub.uow import commit

log = logging.getLogger(__name__)
SEND_LEASE = timedelta(seconds=60)


async def queue_outbound(session: AsyncSession, hub: Hub, message: Message) -> None:
    """Record the message for sending (same transaction), announce it, wake the sender."""
    await session.flush()
    session.add(OutboundSend(message_id=message.id, next_attempt_at=hub.clock()))
    events.publish_after_commit(session, hub, events.new_message(message))
    events.wake_after_commit(session, hub)


@dataclass(frozen=True)
class ClaimedSend:
    message_id: str
    attempt_number: int


SENDS = cast(Table, OutboundSend.__table__)
PENDING = str(OutboundStatus.PENDING)
# Built once, with bind parameters (building a statement per call costs more than running it).
_DUE_SENDS = (
    select(SENDS.c.message_id, SENDS.c.attempt_count)
    .where(
        SENDS.c.status == PENDING,
        SENDS.c.next_attempt_at <= bindparam("b_now"),
        or_(SENDS.c.locked_until.is_(None), SENDS.c.locked_until <= bindparam("b_now")),
    )
    .order_by(SENDS.c.next_attempt_at)
    .limit(bindparam("b_limit", type_=Integer()))
    .with_for_update(skip_locked=True)
)
_CLAIM = (
    update(SENDS)
    .where(SENDS.c.message_id == bindparam("b_id"))
    .values(
        attempt_count=bindparam("b_attempt", type_=Integer()),
        locked_until=bindparam("b_until", type_=SENDS.c.locked_until.type),
    )
)


async def claim_due_sends(
    session: AsyncSession, now: datetime, limit: int = 50
) -> list[ClaimedSend]:
    """Lease due sends (Core statements: this runs on every pass, usually finding none)."""
    rows = (await session.execute(_DUE_SENDS, {"b_now": now, "b_limit": limit})).all()
    if not rows:
        return []
    await session.execute(
        _CLAIM,
        [
            {
                "b_id": row.message_id,
                "b_attempt": row.attempt_count + 1,
                "b_until": now + SEND_LEASE,
            }
            for row in rows
        ],
    )
    return [ClaimedSend(row.message_id, row.attempt_count + 1) for row in rows]


async def send_one(hub: Hub, claim: ClaimedSend) -> None:
    async with hub.db.session(read_only=True) as session:
        context = await _context(session, hub, claim.message_id)
    if context is None:
        return
    error: SendError | None = None
    external_id: str | None = None
    platform = context.channel.platform
    try:
        sent = get_adapter(platform).send(hub.http, context)
        # No URL on the span: Bot API URLs carry the bot token.
        external_id = await tracing.traced(
            sent, f"{platform} send", **{"agenthub.platform": platform}
        )
    except SendError as exc:
        error = exc
    except Exception as exc:  # a bug or an unexpected answer must not lose the message
        log.exception("sending %s failed", claim.message_id)
        error = SendError(f"{type(exc).__name__}: {exc}", transient=True)
    async with hub.db.session() as session:
        outcome = await _record(session, hub, claim, external_id, error)
        await commit(session)
    metrics.outbound(platform, outcome)
    if outcome == "sent":  # `read_receipts: on_reply` (best effort, in the background)
        hub.typing.read_on_reply(context.channel, context.chat.id)


async def outbound_context(
    session: AsyncSession, hub: Hub, message_id: str
) -> OutboundContext | None:
    """The message with its chat, channel and decrypted credentials, for a platform call."""
    return await _context(session, hub, message_id)


async def _context(session: AsyncSession, hub: Hub, message_id: str) -> OutboundContext | None:
    row = (
        await session.execute(
            select(Message, Chat, Channel)
            .join(Chat, Chat.id == Message.chat_id)
            .join(Channel, Channel.id == Message.channel_id)
            .where(Message.id == message_id)
        )
    ).first()
    if row is None:
        return None
    message, chat, channel = row
    return OutboundContext(
        message=message,
        chat=chat,
        channel=channel,
        credentials=hub.secrets.decrypt_json(channel.credentials_encrypted),
        public_url=hub.settings.effective_public_url,
        settings=hub.settings,
    )


async def _record(
    session: AsyncSession,
    hub: Hub,
    claim: ClaimedSend,
    external_id: str | None,
    error: SendError | None,
) -> str | None:
    """Returns `sent`, `retry` or `failed` (for the metrics), or None when the result was
    dropped (another attempt owns the send now)."""
    send = await session.get(OutboundSend, claim.message_id, with_for_update=True)
    message = await session.get(Message, claim.message_id)
    if send is None or message is None or send.attempt_count != claim.attempt_number:
        return None
    send.locked_until = None
    now = hub.clock()
    if error is None:
        send.status = OutboundStatus.SENT
        message.external_id = external_id or message.external_id
        message.error = None  # a retry that went through
        await _advance(session, hub, message, DeliveryStatus.SENT)
        return "sent"
    send.last_error = str(error)
    if error.transient and send.attempt_count < hub.settings.outbound_max_attempts:
        send.next_attempt_at = now + backoff_delay(
            send.attempt_count, hub.settings.delivery_backoff_base_seconds
        )
        events.wake_after_commit(session, hub)
        return "retry"
    send.status = OutboundStatus.FAILED
    message.meta_data = {**message.meta_data, "error": error.as_dict()}
    message.error = failure(
        str(await session.scalar(select(Channel.platform).where(Channel.id == message.channel_id))),
        {"code": error.code, "message": error.detail},
    )
    if await _advance(session, hub, message, DeliveryStatus.FAILED):
        await _needs_human_after_failed_send(session, hub, message)
    return "failed"


async def _advance(
    session: AsyncSession, hub: Hub, message: Message, status: DeliveryStatus
) -> bool:
    """Move a message's status forward only (a late SENT never overwrites READ)."""
    if DeliveryRank[status] <= DeliveryRank[message.delivery_status]:
        return False
    message.delivery_status = status
    await session.flush()
    events.publish_after_commit(session, hub, events.message_status(message))
    return True


async def apply_status(
    session: AsyncSession,
    hub: Hub,
    channel_id: str,
    external_id: str,
    status: DeliveryStatus,
    error: dict[str, Any] | None,
) -> bool:
    """A platform's status callback for one of our sent messages."""
    message = await session.scalar(
        select(Message)
        .where(Message.channel_id == channel_id, Message.external_id == external_id)
        .with_for_update()
    )
    if message is None:
        return False
    if (
        status == DeliveryStatus.FAILED
        and DeliveryRank[status] > DeliveryRank[message.delivery_status]
    ):
        platform = await session.scalar(select(Channel.platform).where(Channel.id == channel_id))
        message.error = failure(str(platform), error)
    advanced = await _advance(session, hub, message, status)
    if advanced and status == DeliveryStatus.FAILED:
        if error:
            message.meta_data = {**message.meta_data, "error": error}
        await _needs_human_after_failed_send(session, hub, message)
    return advanced


def failure(platform: str, error: dict[str, Any] | None) -> dict[str, Any]:
    """A message's `error` from what the platform said (a send's refusal or a status callback):
    `window_closed` for the platform's "outside the reply window" codes, else
    `platform_error`, with the platform's code and message. Errors the parsers already put in
    this shape are kept."""
    error = error or {}
    code = error.get("code")
    platform_code = error.get("platform_code") if code in FAILURE_CODES else code
    message = next(
        (
            str(error[key])[:500]
            for key in ("message", "detail", "title")
            if isinstance(error.get(key), str) and error[key]
        ),
        None,
    )
    adapter = _adapter_or_none(platform)
    closed_codes: frozenset[str] = getattr(adapter, "window_closed_codes", frozenset())
    if code not in FAILURE_CODES:
        code = "window_closed" if str(platform_code) in closed_codes else "platform_error"
    if isinstance(platform_code, str) and platform_code.isdigit():
        platform_code = int(platform_code)
    return {"code": code, "platform_code": platform_code, "message": message}


FAILURE_CODES = ("window_closed", "platform_error")


def _adapter_or_none(platform: str) -> Any:
    try:
        return get_adapter(platform)
    except Exception:
        return None


async def _needs_human_after_failed_send(session: AsyncSession, hub: Hub, message: Message) -> None:
    """The contact did not get a reply: a person should look at the chat."""
    chat = await session.get(Chat, message.chat_id)
    if chat is None:
        return
    set_needs_human(chat, NeedsHumanReason.SEND_FAILED, hub.clock())
    await refresh_handled_by(session, [chat])
    events.publish_after_commit(session, hub, events.chat_updated(chat))


def send_due(*, except_ids: bool = False) -> Any:
    """Scalar subquery: the earliest retry or lease expiry of a pending send (with
    `except_ids`: not counting those in the bound list `b_except_sends`)."""
    due = select(func.min(func.coalesce(SENDS.c.locked_until, SENDS.c.next_attempt_at))).where(
        SENDS.c.status == PENDING
    )
    if except_ids:
        due = due.where(SENDS.c.message_id.not_in(bindparam("b_except_sends", expanding=True)))
    return due.scalar_subquery()
