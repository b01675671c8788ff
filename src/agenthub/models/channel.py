from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Boolean, String, Text
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
