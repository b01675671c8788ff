from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column

from agenthub.ids import new_id
from agenthub.models.base import Base, utcnow


class Platform(StrEnum):
    WHATSAPP_TWILIO = "whatsapp_twilio"
    TELEGRAM = "telegram"
    WHATSAPP_CLOUD = "whatsapp_cloud"
    WHAPI = "whapi"
    API = "api"


class Channel(Base):
    """One connection to a messaging platform (a Twilio number, a Telegram bot, …)."""

    __tablename__ = "channels"

    id: Mapped[str] = mapped_column(String(16), primary_key=True, default=lambda: new_id("chn"))
    name: Mapped[str] = mapped_column(String(200))
    platform: Mapped[str] = mapped_column(String(32))
    # JSON of the platform credentials, encrypted with the hub's secret key.
    credentials_encrypted: Mapped[str] = mapped_column(Text)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # True: new chats get the agents listed in `channel_default_agents` (maybe none). False:
    # the hub-wide rule (every active agent with `activate_for_new_conversation`). A flag, as
    # an empty list and "no list" mean different things and a join table has no null.
    default_agents_listed: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )


class ChannelDefaultAgent(Base):
    """One agent of a channel's `default_agent_ids`, at its place in the list.

    Deleting the agent (or the channel) deletes the row in the database, so a list never
    names an agent that no longer exists.
    """

    __tablename__ = "channel_default_agents"

    channel_id: Mapped[str] = mapped_column(
        ForeignKey("channels.id", ondelete="CASCADE"), primary_key=True
    )
    # Indexed for the cascade: deleting an agent finds its rows without a scan.
    agent_id: Mapped[str] = mapped_column(
        ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    position: Mapped[int] = mapped_column(Integer)
