"""A delivery's attempt log and the replay of failed ones (admin): `GET /deliveries/{id}`,
`POST /deliveries/{id}/retry` and `POST /auth/agents/{id}/recover` (docs/api.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, status
from pydantic import AfterValidator, AwareDatetime, Field

from agenthub.chats.schemas import DeliveryOut
from agenthub.delivery import replay
from agenthub.deps import AdminUser, HubDep, SessionDep
from agenthub.errors import NotFound
from agenthub.models import AgentDelivery
from agenthub.openapi_errors import error_responses
from agenthub.schemas import Out, Schema

router = APIRouter()


def _in_utc(value: datetime) -> datetime:
    # Here, not in the query: a time whose UTC form is outside the calendar (year 1 at +05:00)
    # is then a 422, not a database error.
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("is out of range in UTC") from exc


Instant = Annotated[AwareDatetime, AfterValidator(_in_utc)]


class RecoverIn(Schema):
    since: Instant = Field(description="Retry the failed deliveries created at or after this.")
    until: Instant | None = Field(
        default=None, description="…and before this (default: now). At most 14 days after `since`."
    )


class RecoverOut(Out):
    deliveries: int = Field(description="How many failed deliveries were queued again.")


@router.get("/deliveries/{delivery_id}", response_model=DeliveryOut, tags=["deliveries"])
async def get_delivery(delivery_id: str, _: AdminUser, session: SessionDep) -> DeliveryOut:
    """One delivery with its attempt log (admin): each attempt's time, duration, trigger,
    status code, `error_kind`, error, the first 4 KiB of the answer and the address the hub
    connected to."""
    delivery = await session.get(AgentDelivery, delivery_id)
    if delivery is None:
        raise NotFound("Delivery not found")
    return await replay.present_delivery(session, delivery)


@router.post(
    "/deliveries/{delivery_id}/retry",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=DeliveryOut,
    responses=error_responses(409),
    tags=["deliveries"],
)
async def retry_delivery(
    delivery_id: str, _: AdminUser, session: SessionDep, hub: HubDep
) -> DeliveryOut:
    """Run a **failed** delivery again now, with the same `webhook-id` (admin). The answer is
    the delivery, pending again, as `GET /chats/{id}/deliveries` shows it; the attempt it
    gets is recorded with `trigger: "manual"`, and is one attempt (no backoff retries).
    409 when the delivery has not failed, or the agent is paused in the chat, unlinked from
    it or inactive."""
    delivery = await replay.retry_delivery(session, hub, delivery_id)
    return await replay.present_delivery(session, delivery)


@router.post(
    "/auth/agents/{agent_id}/recover",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RecoverOut,
    responses=error_responses(409),
    tags=["agents"],
)
async def recover_agent(
    agent_id: str, data: RecoverIn, _: AdminUser, session: SessionDep, hub: HubDep
) -> RecoverOut:
    """Retry every failed delivery of the agent created in `[since, until)` (admin), e.g. once
    it is back after an outage; each gets one attempt, recorded with `trigger: "recover"`.
    Deliveries in chats where the agent is paused or unlinked stay failed. 422 when `until`
    is before `since` or the window is longer than 14 days; 409 when the agent is inactive."""
    count = await replay.recover_agent(session, hub, agent_id, data.since, data.until)
    return RecoverOut(deliveries=count)
