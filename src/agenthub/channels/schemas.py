"""Channel request and answer bodies.

`POST /channels` is a union discriminated by `platform`: each platform's variant names its own
credentials model, so the OpenAPI document shows every platform's fields and a bad field is
reported where the client wrote it (`["body", "credentials", "bot_token"]`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    Field,
    RootModel,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    ValidatorFunctionWrapHandler,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from agenthub.models import Platform
from agenthub.schemas import JsonObject, Name, Out, Schema

Secret = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1024)]
AgentId = Annotated[str, StringConstraints(min_length=1, max_length=64)]
WebhookKey = Annotated[str, StringConstraints(pattern=r"^whsec_[A-Za-z0-9+/=]{32,100}$")]


# --- credentials, one model per platform --------------------------------------------------------


class TwilioCredentials(Schema):
    """`whatsapp_twilio`: the Twilio account and its WhatsApp sender."""

    account_sid: Secret = Field(description="The Twilio Account SID (`AC…`).")
    auth_token: Secret = Field(
        description="The account's Auth Token: authenticates sends and checks the "
        "`X-Twilio-Signature` of Twilio's webhooks."
    )
    from_number: Secret = Field(
        description="The sender, as Twilio's `From` takes it: `whatsapp:+14155238886`."
    )


class TelegramCredentials(Schema):
    """`telegram`: one bot."""

    bot_token: Secret = Field(description="The bot's token from @BotFather (`123456:ABC…`).")
    secret_token: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,256}$")] = Field(
        description="Sent by Telegram in `X-Telegram-Bot-Api-Secret-Token` with every update "
        "(the hub gives it to `setWebhook`); 1-256 of `A-Z a-z 0-9 _ -`."
    )


class WhatsAppCloudCredentials(Schema):
    """`whatsapp_cloud`: a Meta app and one of its phone numbers."""

    access_token: Secret = Field(
        description="A Graph API access token (a system user's, for production)."
    )
    phone_number_id: Secret = Field(
        description="The sending phone number's id (not the number itself); messages to other "
        "numbers of the same app are ignored."
    )
    app_secret: Secret = Field(
        description="The app's secret: checks the `X-Hub-Signature-256` of Meta's webhooks."
    )
    verify_token: Secret = Field(
        description="Any string of your choice, also entered in the App Dashboard: answers "
        "Meta's `hub.verify_token` handshake."
    )
    waba_id: Secret | None = Field(
        default=None,
        description="The WhatsApp Business Account id (optional), for reading its message "
        "templates.",
    )


class WhapiCredentials(Schema):
    """`whapi`: one WHAPI channel (a WhatsApp number)."""

    token: Secret = Field(description="The WHAPI channel's API token.")
    webhook_secret: Secret = Field(
        description="Any string of your choice: WHAPI must send it in the `X-Webhook-Secret` "
        "header of its webhook (set in the webhook's headers), or the hub refuses the request."
    )


class ApiCredentials(Schema):
    """`api`: the hub's own signed JSON webhook, for web chats and custom apps."""

    secret: WebhookKey | None = Field(
        default=None,
        description="A Standard Webhooks key (`whsec_` + base64): signs inbound requests and "
        "the hub's callbacks. Omitted: the hub generates one and shows it once, in the answer.",
    )


CREDENTIAL_SCHEMAS: dict[Platform, type[Schema]] = {
    Platform.WHATSAPP_TWILIO: TwilioCredentials,
    Platform.TELEGRAM: TelegramCredentials,
    Platform.WHATSAPP_CLOUD: WhatsAppCloudCredentials,
    Platform.WHAPI: WhapiCredentials,
    Platform.API: ApiCredentials,
}


def _parsable_url(url: str) -> str:
    """The hub calls these URLs: refuse what `urlsplit` cannot take apart (`http://[`, a port
    out of range) here, as a 422 at the field, rather than when the hub first uses it."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (parsed lazily: this raises for a bad port)
    except ValueError:
        raise ValueError("must be an absolute http(s) URL") from None
    if not parts.hostname:
        raise ValueError("must be an absolute http(s) URL")
    return url


ApiBaseUrl = Annotated[
    str,
    StringConstraints(pattern=r"^https?://[^\s/]+$", max_length=2048),
    AfterValidator(_parsable_url),
]
CallbackUrl = Annotated[
    str,
    StringConstraints(pattern=r"^https?://\S+$", max_length=2048),
    AfterValidator(_parsable_url),
]


class ChannelConfig(Schema):
    """Settings that are not secret (answers show them). Known keys are checked; other keys
    are kept for the platform adapter."""

    model_config = {"extra": "allow"}

    api_base_url: ApiBaseUrl | None = Field(
        default=None,
        description="Scheme and host (and port) of the platform's API, e.g. "
        "`https://api.twilio.com`, for a Twilio edge, a local Telegram Bot API server or a test "
        "double; the hub appends the platform's usual paths. Default: the platform's own.",
    )
    callback_url: CallbackUrl | None = Field(
        default=None,
        description="`api` channels: where the hub POSTs each outbound message "
        "(`message.outbound`, signed with the channel's secret). Unset: clients read replies "
        "through the API or the WebSocket.",
    )
    read_receipts: Literal["off", "on_open", "on_reply"] | None = Field(
        default=None,
        description="`whatsapp_cloud` channels: when the hub marks the contact's messages read "
        "on WhatsApp (blue ticks): `off` (the default: never), `on_open` (when an operator opens "
        "the chat: its read marker moves) or `on_reply` (when a USER or AGENT reply was sent). "
        "Other platforms ignore it.",
    )
    stream: bool | None = Field(
        default=None,
        description="`api` channels with a `callback_url`: while an agent streams its reply, "
        "the hub POSTs `message.partial` callbacks (the text so far, at most every 200 ms), "
        "signed as `message.outbound` is and sent before it.",
    )
    stream_drafts: bool | None = Field(
        default=None,
        description="`telegram` channels: while an agent streams its reply, show it forming as "
        "a draft (`sendMessageDraft`, at most every 200 ms); the final message is sent as usual.",
    )
    typing_api_base_url: ApiBaseUrl | None = Field(
        default=None,
        description="`whatsapp_twilio` channels: scheme and host of the typing indicator's API "
        "(`/v2/Indicators/Typing.json`). Default: `https://messaging.twilio.com`.",
    )
    content_api_base_url: ApiBaseUrl | None = Field(
        default=None,
        description="`whatsapp_twilio` channels: scheme and host of the Content API, where "
        "`GET /channels/{id}/templates` reads the account's templates "
        "(`/v1/ContentAndApprovals`). Default: `https://content.twilio.com`.",
    )

    @model_validator(mode="before")
    @classmethod
    def _bounded(cls, value: Any) -> Any:
        return _JSON_OBJECT.validate_python(value)


# The cap on the size of client JSON, checked before the fields.
_JSON_OBJECT: TypeAdapter[dict[str, Any]] = TypeAdapter(JsonObject)


# --- requests ---------------------------------------------------------------------------------

DEFAULT_AGENT_IDS = (
    "The agents a new chat on this channel is linked to: exactly those of the list that are "
    "active (an empty list: none). null: every active agent with "
    "`activate_for_new_conversation`. Unknown ids are refused (422); duplicates are dropped, "
    "the order kept. A deleted agent leaves the lists that name it."
)
DefaultAgentIds = Annotated[list[AgentId], Field(max_length=200)] | None


class _NewChannel(Schema):
    name: Name
    config: ChannelConfig = Field(default_factory=ChannelConfig)
    is_active: bool = True
    default_agent_ids: DefaultAgentIds = Field(default=None, description=DEFAULT_AGENT_IDS)


class NewTwilioChannel(_NewChannel):
    platform: Literal[Platform.WHATSAPP_TWILIO]
    credentials: TwilioCredentials


class NewTelegramChannel(_NewChannel):
    platform: Literal[Platform.TELEGRAM]
    credentials: TelegramCredentials


class NewWhatsAppCloudChannel(_NewChannel):
    platform: Literal[Platform.WHATSAPP_CLOUD]
    credentials: WhatsAppCloudCredentials


class NewWhapiChannel(_NewChannel):
    platform: Literal[Platform.WHAPI]
    credentials: WhapiCredentials


class NewApiChannel(_NewChannel):
    platform: Literal[Platform.API]
    credentials: ApiCredentials = Field(default_factory=ApiCredentials)


NewChannel = (
    NewTwilioChannel
    | NewTelegramChannel
    | NewWhatsAppCloudChannel
    | NewWhapiChannel
    | NewApiChannel
)


class ChannelCreate(RootModel[Annotated[NewChannel, Field(discriminator="platform")]]):
    """A new channel: `platform` says which `credentials` it takes."""

    @model_validator(mode="wrap")
    @classmethod
    def _locate_errors(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError as exc:
            raise ValidationError.from_exception_data(
                exc.title, [_as_written(error) for error in exc.errors()]
            ) from None


_TAGS = frozenset(str(platform) for platform in Platform)


def _as_written(error: Any) -> InitErrorDetails:
    """A union's error is located under the variant's tag (`["telegram", "credentials", …]`),
    which is not in the request: drop it. An absent or unknown `platform` is reported at
    `platform`, like any other field. (A custom error keeps pydantic's type and message as they
    were, whatever the type.)"""
    kind, message, loc = error["type"], error["msg"], tuple(error["loc"])
    if loc and loc[0] in _TAGS:
        loc = loc[1:]
    if kind == "union_tag_not_found":
        kind, message, loc = "missing", "Field required", ("platform",)
    elif kind == "union_tag_invalid":
        *first, last = (repr(str(platform)) for platform in Platform)
        kind, message, loc = "enum", f"Input should be {', '.join(first)} or {last}", ("platform",)
    return {"type": PydanticCustomError(kind, message), "loc": loc, "input": error["input"]}


class ChannelUpdate(Schema):
    name: Name | None = None
    credentials: JsonObject | None = Field(
        default=None,
        description="Some of the channel's credentials (fields of its platform's model: "
        "`TwilioCredentials`, `TelegramCredentials`, `WhatsAppCloudCredentials`, "
        "`WhapiCredentials` or `ApiCredentials`). Keys given replace the stored ones, others "
        "are kept, and the result must be valid for the platform (else 422, located at "
        '`["body", "credentials", <field>]`).',
    )
    config: ChannelConfig | None = Field(default=None, description="Replaces the config.")
    is_active: bool | None = None
    default_agent_ids: DefaultAgentIds = Field(
        default=None, description=f"Absent: unchanged. {DEFAULT_AGENT_IDS}"
    )


# --- answers ----------------------------------------------------------------------------------


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
    default_agent_ids: list[str] | None = Field(description=DEFAULT_AGENT_IDS)
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


class TemplateOut(Out):
    """One message template of the channel's account, as the platform lists it."""

    name: str = Field(
        description="What `template.name` takes when sending: WhatsApp Cloud the template's "
        "name, Twilio its Content SID (`HX…`)"
    )
    language: str | None = Field(description="e.g. `en_US` (Cloud) or `en` (Twilio)")
    status: str | None = Field(
        description="The approval status as the platform spells it: Cloud `APPROVED`, "
        "`PENDING`, `REJECTED`…; Twilio `approved`, `pending`, `unsubmitted`…"
    )
    category: str | None = Field(description="`UTILITY`, `MARKETING`, `AUTHENTICATION`…")
    body: str | None = Field(
        description="The readable body text, with its placeholders (`Hi {{1}}`)"
    )


class TemplateList(Out):
    templates: list[TemplateOut]


class ChannelCreated(ChannelOut):
    """For an `api` channel created without a secret, `credentials.secret` shows the
    generated one, this once."""
