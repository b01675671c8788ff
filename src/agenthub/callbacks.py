"""The requests the hub sends, described in the OpenAPI document's `webhooks` section.

The hub calls two kinds of endpoint that its users write: an agent's `webhook_url` (a delivery of
new contact messages) and an `api` channel's `config.callback_url` (a message for the contact).
These models only document those calls; the bodies themselves are built in
`delivery/payload.py` and `platforms/api.py`, and `tests/test_api_docs.py` checks that a real
delivery matches the model.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI
from pydantic import BaseModel, Field

from agenthub.chats.schemas import ChatOut, MessageOut

_SIGNED = (
    "Signed with Standard Webhooks: `webhook-id`, `webhook-timestamp` and `webhook-signature` "
    '(`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, keyed with the base64 part of the '
    "`whsec_` secret). Verify with the `standardwebhooks` package (Python or npm) and reject "
    "timestamps more than 5 minutes away."
)


class DeliveryAgent(BaseModel):
    id: str = Field(description="The agent this delivery is for (`agt_…`)")
    name: str


class DeliveryChat(BaseModel):
    id: str = Field(description="`cht_…`; post replies to `/chats/{id}/messages`")
    name: str | None
    external_id: str = Field(description="The contact's address on the platform")
    channel_id: str
    platform: Literal["whatsapp_twilio", "telegram", "whatsapp_cloud", "whapi", "api"]


class DeliveryMessage(BaseModel):
    id: str
    content: str
    sender: Literal["contact", "user", "agent"]
    sender_type: Literal["CONTACT", "USER", "AGENT"]
    timestamp: str = Field(description="ISO 8601, UTC")
    meta_data: dict[str, Any] = Field(
        description="Platform details; media as `media: [{url, content_type}]`"
    )


class AgentDelivery(BaseModel):
    """The body POSTed to an agent's `webhook_url`."""

    event: Literal["chat.messages"]
    delivery_id: str = Field(description="`dlv_…`; equals the `webhook-id` header on every retry")
    agent: DeliveryAgent
    chat: DeliveryChat
    messages: list[DeliveryMessage] = Field(
        description="The conversation, oldest first: at most `history_msg_count` messages of the "
        "last `recent_msg_window_minutes`, always including the new ones"
    )
    new_message_ids: list[str] = Field(
        description="The contact messages this delivery is about, oldest first"
    )
    reply_url: str = Field(description="Where to POST a later reply, with the agent's token")


class AgentAnswer(BaseModel):
    """What a 2xx answer to a delivery may carry (an empty body is fine too)."""

    reply: str | None = Field(default=None, description="One message for the contact")
    replies: list[str] | None = Field(default=None, description="Several messages, in order")
    handoff: bool | None = Field(
        default=None,
        description="true: the chat needs a human and this agent stops receiving it",
    )


class OutboundMessage(BaseModel):
    """The body POSTed to an `api` channel's `config.callback_url`."""

    event: Literal["message.outbound"]
    chat: ChatOut
    message: MessageOut


_DELIVERY = (
    "POSTed to the agent's `webhook_url` once the chat has been quiet for `buffer_time_seconds` "
    "(or the oldest waiting message has waited `max_buffer_seconds`). A timeout "
    "(`timeout_seconds`), connection error, 429 or 5xx is retried with backoff and the same "
    "`webhook-id`; any other 4xx fails the delivery at once."
)
_OUTBOUND = (
    "POSTed to the channel's `config.callback_url` for every USER and AGENT message of an `api` "
    "channel; `webhook-id` is the message id. A 5xx or timeout is retried."
)


def describe_callbacks(app: FastAPI) -> None:
    """Add the outgoing calls to `app`'s OpenAPI document (`webhooks`)."""

    @app.webhooks.post(
        "chat.messages",
        summary="Delivery of new contact messages to an agent",
        description=f"{_DELIVERY}\n\n{_SIGNED}",
        response_model=AgentAnswer,
    )
    def agent_delivery(body: AgentDelivery) -> None: ...

    @app.webhooks.post(
        "message.outbound",
        summary="A message for the contact of an api channel",
        description=f"{_OUTBOUND}\n\n{_SIGNED}",
    )
    def outbound_message(body: OutboundMessage) -> None: ...
