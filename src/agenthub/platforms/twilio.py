"""`whatsapp_twilio`: Twilio's form webhooks, X-Twilio-Signature, TwiML answers, Messages API.

Templates are Content API items (`GET {content_api_base_url}/v1/ContentAndApprovals`, Basic
auth, following `meta.next_page_url`): a template's `name` is its Content SID (`HX…`). A
contact's address is `whatsapp:+<digits>`, as Twilio's `From` gives it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx2
from fastapi import Response

from agenthub.models import DeliveryStatus
from agenthub.platforms.base import (
    Capabilities,
    ChannelContext,
    ChatContext,
    Inbound,
    InboundMessage,
    OutboundContext,
    SendError,
    StatusUpdate,
    TemplateInfo,
    WebhookRequest,
    send_error_from_response,
)
from agenthub.platforms.common import (
    TEXT_MAX,
    obj,
    objs,
    outbound_rich,
    phone_digits,
    read_pages,
    secret_matches,
    text,
)
from agenthub.rich import Rich, positional

DEFAULT_API_BASE = "https://api.twilio.com"
# The typing indicator is on the Messaging API's host (`config.typing_api_base_url` replaces it).
DEFAULT_TYPING_API_BASE = "https://messaging.twilio.com"
# The Content API (templates) has its own host too (`config.content_api_base_url`).
DEFAULT_CONTENT_API_BASE = "https://content.twilio.com"
TWIML_EMPTY = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
TEXT_LIMIT = 1600  # a WhatsApp message's Body
CONTENT_SID = re.compile(r"HX[0-9a-fA-F]{32}")

# The status callback's ErrorCode when a free-form message went out of the 24-hour window.
WINDOW_CLOSED_CODE = 63016

# Twilio's MessageStatus values that mean something to a dashboard; the rest are ignored.
STATUS_MAP = {
    "sent": DeliveryStatus.SENT,
    "delivered": DeliveryStatus.DELIVERED,
    "read": DeliveryStatus.READ,
    "failed": DeliveryStatus.FAILED,
    "undelivered": DeliveryStatus.FAILED,
}


def twilio_signature(auth_token: str, url: str, params: dict[str, list[str]]) -> str:
    """HMAC-SHA1 over the URL plus every param name+value, names and values sorted."""
    payload = url + "".join(
        name + values[0] if len(values) == 1 else "".join(name + v for v in sorted(set(values)))
        for name, values in sorted(params.items())
    )
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def _url_variants(url: str) -> list[str]:
    """Twilio signs with or without the default port; accept both, as its SDK does."""
    parts = urlsplit(url)
    default_port = {"https": 443, "http": 80}.get(parts.scheme)
    host = parts.hostname or ""
    without = urlunsplit(
        (
            parts.scheme,
            host + (f":{parts.port}" if parts.port and parts.port != default_port else ""),
            parts.path,
            parts.query,
            "",
        )
    )
    with_port = urlunsplit(
        (parts.scheme, f"{host}:{parts.port or default_port}", parts.path, parts.query, "")
    )
    return list(dict.fromkeys((url, without, with_port)))


class TwilioAdapter:
    name = "whatsapp_twilio"
    reply_window: timedelta | None = timedelta(hours=24)
    # Free-form buttons and lists go as numbered text lines (Content templates carry real ones).
    capabilities = Capabilities(
        buttons=3,
        list_rows=10,
        templates=True,
        typing=True,
        reactions=False,
        media=True,
        max_text_length=TEXT_LIMIT,
        rendering="numbered_text",
    )
    # Twilio's error code for "outside the 24 h window" (a send's 4xx or a status callback).
    window_closed_codes = frozenset({"63016"})

    def verify(self, request: WebhookRequest, credentials: dict[str, Any]) -> bool:
        token = credentials.get("auth_token")
        given = request.headers.get("x-twilio-signature")
        if not token or not given:
            return False
        params = request.form
        if secret_matches(given, twilio_signature(token, request.url, params)):
            return True  # the usual case: no need to work out the URL's other spellings
        return any(
            secret_matches(given, twilio_signature(token, url, params))
            for url in _url_variants(request.url)
            if url != request.url
        )

    def parse(self, request: WebhookRequest) -> Inbound:
        params = {name: values[0] for name, values in request.form.items() if values}
        sid = params.get("MessageSid") or params.get("SmsSid")
        if not sid:
            return Inbound()
        if "MessageStatus" in params and "Body" not in params:
            return self._status(sid, params)
        if not params.get("From"):
            return Inbound()
        return Inbound(messages=[self._message(sid, params)])

    def _status(self, sid: str, params: dict[str, str]) -> Inbound:
        status = STATUS_MAP.get(params["MessageStatus"].lower())
        if status is None:
            return Inbound()
        error = None
        if code := params.get("ErrorCode"):
            platform_code: int | str = (
                int(code) if code.isascii() and code.isdigit() and len(code) < 10 else code[:64]
            )
            window_closed = platform_code == WINDOW_CLOSED_CODE and status == DeliveryStatus.FAILED
            error = {
                "code": "window_closed" if window_closed else "platform_error",
                "platform_code": platform_code,
                "message": params.get("ErrorMessage") or None,
                "detail": params.get("ErrorMessage") or None,
            }
        return Inbound(statuses=[StatusUpdate(sid, status, error)])

    def _message(self, sid: str, params: dict[str, str]) -> InboundMessage:
        media = []
        count = int(params["NumMedia"]) if params.get("NumMedia", "").isdigit() else 0
        for n in range(min(count, 10)):
            if url := params.get(f"MediaUrl{n}"):
                media.append({"url": url, "content_type": params.get(f"MediaContentType{n}")})
        meta: dict[str, Any] = {"media": media} if media else {}
        for key in (
            "Latitude",
            "Longitude",
            "Address",
            "Label",
            "ButtonPayload",
            "ButtonText",
            "OriginalRepliedMessageSid",
        ):
            if params.get(key):
                meta[key[0].lower() + key[1:]] = params[key]
        content = params.get("Body", "")
        # A tap on a Content template's button (`ButtonPayload`: its id, else the label) or a
        # list-picker row (`ListId`), answering our message `OriginalRepliedMessageSid`.
        choice = params.get("ButtonPayload") or params.get("ListId") or None
        replied_to = params.get("OriginalRepliedMessageSid") or None
        if choice:
            content = content or params.get("ButtonText") or params.get("ListTitle") or ""
        if choice or replied_to:
            meta["reply_to"] = {"id": choice}
        for key in ("ListId", "ListTitle"):
            if params.get(key):
                meta[key[0].lower() + key[1:]] = params[key]
        return InboundMessage(
            external_id=sid,
            contact_id=params["From"],
            contact_name=params.get("ProfileName"),
            content=content,
            meta_data=meta,
            replied_to=replied_to,
        )

    def acknowledge(self) -> Response:
        return Response(TWIML_EMPTY, media_type="text/xml")

    def check_rich(
        self, content: str, rich: dict[str, Any]
    ) -> list[tuple[tuple[str | int, ...], str]]:
        template = rich.get("template")
        if template is not None:
            if not CONTENT_SID.fullmatch(template["name"]):
                return [(("template", "name"), "a Twilio Content SID (HX + 32 hex digits)")]
            return []
        body = numbered_text(content, Rich.model_validate(rich))
        if len(body) > TEXT_LIMIT:
            return [(("content",), f"with its numbered choices, at most {TEXT_LIMIT} characters")]
        return []

    async def send(self, http: httpx2.AsyncClient, context: OutboundContext) -> str | None:
        creds = context.credentials
        base = context.api_base_url(DEFAULT_API_BASE)
        url = f"{base}/2010-04-01/Accounts/{creds['account_sid']}/Messages.json"
        form: dict[str, str | list[str]] = {
            "To": context.chat.external_id,
            "From": creds["from_number"],
            "Body": context.message.content,
            "StatusCallback": (
                f"{context.public_url}/webhooks/{self.name}/{context.channel.id}/status"
            ),
        }
        rich = outbound_rich(context.message.meta_data)
        if rich is not None and rich.template is not None:
            # A Content template: its SID and variables, no Body.
            del form["Body"]
            form["ContentSid"] = rich.template.name
            if rich.template.parameters:
                form["ContentVariables"] = json.dumps(
                    positional(rich.template), separators=(",", ":"), ensure_ascii=False
                )
        elif rich is not None:
            form["Body"] = numbered_text(context.message.content, rich)
        media = [
            str(item["url"])
            for item in context.message.meta_data.get("media") or []
            if isinstance(item, dict) and item.get("url")
        ]
        if media:
            form["MediaUrl"] = media
        return (await _post_form(http, url, form, creds)).get("sid")

    # --- typing --------------------------------------------------------------------------------

    # One call: the indicator lasts until our reply is delivered or 25 s.
    typing_renew_seconds: float | None = None

    async def send_typing(self, http: httpx2.AsyncClient, context: ChatContext) -> None:
        """`POST /v2/Indicators/Typing.json channel=whatsapp&messageId=<last inbound SID>`
        (which also marks that message read); nothing without an inbound message."""
        if not context.last_inbound_id:
            return
        base = _base_url(context.channel.config.get("typing_api_base_url"), DEFAULT_TYPING_API_BASE)
        form = {"channel": "whatsapp", "messageId": context.last_inbound_id}
        await _post_form(http, f"{base}/v2/Indicators/Typing.json", form, context.credentials)

    # --- templates and contact addresses -------------------------------------------------------

    async def list_templates(
        self, http: httpx2.AsyncClient, context: ChannelContext
    ) -> list[TemplateInfo]:
        """`GET /v1/ContentAndApprovals?PageSize=100`, every page (`meta.next_page_url`, on the
        same host only: it gets the account's credentials)."""
        base = _base_url(
            context.channel.config.get("content_api_base_url"), DEFAULT_CONTENT_API_BASE
        )
        pages = await read_pages(
            f"{base}/v1/ContentAndApprovals?PageSize=100",
            lambda url: _get_json(http, url, context.credentials),
            lambda page: obj(page.get("meta")).get("next_page_url"),
        )
        return [
            t for page in pages for t in map(_content_template, objs(page.get("contents"))) if t
        ]

    def contact_address(self, to: str, credentials: dict[str, Any]) -> str:
        """`whatsapp:+<digits>`, as Twilio's `From` carries the contact (without the prefix
        when the sender itself has none)."""
        sender = str(credentials.get("from_number") or "whatsapp:")
        prefix = "whatsapp:" if sender.lower().startswith("whatsapp:") else ""
        return f"{prefix}+{phone_digits(to)}"


def _base_url(configured: Any, default: str) -> str:
    return str(configured or default).rstrip("/")


def _content_template(item: dict[str, Any]) -> TemplateInfo | None:
    """One Content API item: `{sid, language, types: {"twilio/text": {body}, …},
    approval_requests: {status, category} (or under `whatsapp`)}`."""
    sid = text(item.get("sid"), 64)
    if sid is None:
        return None
    approval = obj(item.get("approval_requests"))
    whatsapp = obj(approval.get("whatsapp"))
    types = obj(item.get("types"))
    bodies = [obj(types.get("twilio/text")).get("body")] + [
        obj(value).get("body") for value in types.values()
    ]
    body = next((found for found in (text(b, TEXT_MAX) for b in bodies) if found), None)
    return TemplateInfo(
        name=sid,
        language=text(item.get("language"), 64),
        status=text(approval.get("status"), 64) or text(whatsapp.get("status"), 64),
        category=text(approval.get("category"), 64) or text(whatsapp.get("category"), 64),
        body=body,
    )


async def _get_json(http: httpx2.AsyncClient, url: str, creds: dict[str, Any]) -> dict[str, Any]:
    """GET a Twilio API resource with the account's Basic auth; its JSON, or a `SendError`."""
    try:
        response = await http.get(
            url,
            auth=(creds["account_sid"], creds["auth_token"]),
            headers={"Accept": "application/json"},
            timeout=15,
        )
    except (httpx2.HTTPError, httpx2.InvalidURL) as exc:
        raise SendError(f"{type(exc).__name__}: {exc}", transient=True) from exc
    body = _json(response)
    if not response.is_success:
        raise send_error_from_response(response, body.get("code"), body.get("message"))
    return body


async def _post_form(
    http: httpx2.AsyncClient, url: str, form: dict[str, Any], creds: dict[str, Any]
) -> dict[str, Any]:
    """POST a form to a Twilio API with the account's Basic auth; its JSON answer, or the
    `SendError` its failure means (network errors are transient)."""
    try:
        response = await http.post(
            url,
            data=form,
            auth=(creds["account_sid"], creds["auth_token"]),
            headers={"Accept": "application/json"},
            timeout=15,
        )
    except httpx2.HTTPError as exc:
        raise SendError(f"{type(exc).__name__}: {exc}", transient=True) from exc
    body = _json(response)
    if not response.is_success:
        raise send_error_from_response(response, body.get("code"), body.get("message"))
    return body


def numbered_text(content: str, rich: Rich) -> str:
    """Buttons or a list as WhatsApp text: the body, then one numbered line per choice
    ("1. Yes"); list rows keep their description, sections their title."""
    lines: list[str] = []
    if rich.buttons is not None:
        lines = [f"{n}. {button.title}" for n, button in enumerate(rich.buttons, start=1)]
    elif rich.list is not None:
        n = 0
        titled = len(rich.list.sections) > 1
        for section in rich.list.sections:
            if titled:
                lines.append(f"{section.title}:")
            for row in section.rows:
                n += 1
                line = f"{n}. {row.title}"
                lines.append(f"{line} - {row.description}" if row.description else line)
    return content + "\n\n" + "\n".join(lines) if lines else content


def _json(response: httpx2.Response) -> dict[str, Any]:
    try:
        value = response.json()
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
