from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import Field, StringConstraints, model_validator

from agenthub.models import Platform
from agenthub.schemas import JsonObject, Name, Out, Schema

Secret = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1024)]


class TwilioCredentials(Schema):
    account_sid: Secret
    auth_token: Secret
    from_number: Secret


class TelegramCredentials(Schema):
    bot_token: Secret
    secret_token: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,256}$")]


class WhatsAppCloudCredentials(Schema):
    access_token: Secret
    phone_number_id: Secret
    app_secret: Secret
    verify_token: Secret


class WhapiCredentials(Schema):
    token: Secret
    webhook_secret: Secret


class ApiCredentials(Schema):
    secret: Annotated[str, StringConstraints(pattern=r"^whsec_[A-Za-z0-9+/=]{32,100}$")] | None = (
        None
    )


CREDENTIAL_SCHEMAS: dict[Platform, type[Schema]] = {
    Platform.WHATSAPP_TWILIO: TwilioCredentials,
    Platform.TELEGRAM: TelegramCredentials,
    Platform.WHATSAPP_CLOUD: WhatsAppCloudCredentials,
    Platform.WHAPI: WhapiCredentials,
    Platform.API: ApiCredentials,
}


class ChannelConfig(Schema):
    """Known keys are checked; other keys are kept for the platform adapter."""

    model_config = {"extra": "allow"}

    api_base_url: (
        Annotated[str, StringConstraints(pattern=r"^https?://[^\s/]+$", max_length=2048)] | None
    ) = None
    callback_url: (
        Annotated[str, StringConstraints(pattern=r"^https?://\S+$", max_length=2048)] | None
    ) = None


class ChannelCreate(Schema):
    name: Name
    platform: Platform
    credentials: JsonObject = Field(default_factory=dict)
    config: JsonObject = Field(default_factory=dict)
    is_active: bool = True

    @model_validator(mode="after")
    def _check_platform_fields(self) -> ChannelCreate:
        CREDENTIAL_SCHEMAS[self.platform].model_validate(self.credentials)
        ChannelConfig.model_validate(self.config)
        return self


class ChannelUpdate(Schema):
    name: Name | None = None
    credentials: JsonObject | None = Field(
        default=None, description="Keys given replace the stored ones; others are kept."
    )
    config: JsonObject | None = None
    is_active: bool | None = None

    @model_validator(mode="after")
    def _check_config(self) -> ChannelUpdate:
        if self.config is not None:
            ChannelConfig.model_validate(self.config)
        return self


class ChannelOut(Out):
    id: str
    name: str
    platform: Platform
    credentials: dict[str, Any] = Field(
        description="Masked: which keys are set, never their values"
    )
    config: dict[str, Any]
    webhook_url: str
    is_active: bool
    created_at: datetime
    webhook_registered: bool | None = Field(
        default=None,
        description=(
            "Telegram: whether the hub registered `webhook_url` at the platform "
            "(`POST /channels/{id}/register-webhook`) with the current credentials, API base "
            "URL and public URL. null for platforms whose webhook is set by hand."
        ),
    )
    webhook_registered_at: datetime | None = None
    setup: list[str] = Field(
        default_factory=list, description="What to configure at the platform, step by step"
    )


class ChannelCreated(ChannelOut):
    """For an `api` channel created without a secret, `credentials.secret` shows the
    generated one, this once."""
