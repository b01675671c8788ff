"""`whatsapp_twilio`: Twilio's form webhooks, X-Twilio-Signature, TwiML answers, Messages API."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx2
from fastapi import Response

from agenthub.models import DeliveryStatus
from agenthub.platforms.base import (
    Inbound,
    InboundMessage,
    OutboundContext,
    SendError,
    StatusUpdate,
    WebhookRequest,
    send_error_from_response,
)
from agenthub.platforms.common import secret_matches

DEFAULT_API_BASE = "https://api.twilio.com"
TWIML_EMPTY = '<?xml version="1.0" encoding="UTF-8"?><Response/>'

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
        if params.get("ErrorCode"):
            error = {"code": params["ErrorCode"], "detail": params.get("ErrorMessage")}
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
        return InboundMessage(
            external_id=sid,
            contact_id=params["From"],
            contact_name=params.get("ProfileName"),
            content=params.get("Body", ""),
            meta_data=meta,
        )

    def acknowledge(self) -> Response:
        return Response(TWIML_EMPTY, media_type="text/xml")

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
        media = [
            str(item["url"])
            for item in context.message.meta_data.get("media") or []
            if isinstance(item, dict) and item.get("url")
        ]
        if media:
            form["MediaUrl"] = media
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
        if not response.is_success:
            body = _json(response)
            raise send_error_from_response(response, body.get("code"), body.get("message"))
        return _json(response).get("sid")


def _json(response: httpx2.Response) -> dict[str, Any]:
    try:
        value = response.json()
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
