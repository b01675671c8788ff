"""`POST /chats/{id}/typing`: show "typing…" to the contact, best effort."""

from __future__ import annotations

from fastapi import APIRouter, status
from pydantic import Field

from agenthub.chats.router import ReadableChat
from agenthub.deps import HubDep
from agenthub.schemas import Out

router = APIRouter(tags=["chats"])


class TypingOut(Out):
    chat_id: str
    typing_seconds: float = Field(
        description="How long typing shows at most, unless a message goes out first"
    )


@router.post(
    "/chats/{chat_id}/typing", status_code=status.HTTP_202_ACCEPTED, response_model=TypingOut
)
async def start_typing(chat: ReadableChat, hub: HubDep) -> TypingOut:
    """Show "typing…" in the chat on the platform (users with access to its channel; agents
    linked to it), for up to 25 s or until a USER or AGENT message goes out. Telegram gets
    `sendChatAction` again every 4 s; WhatsApp (Cloud, Twilio) shows it on the chat's last
    inbound message (none yet: nothing happens); WHAPI a `typing` presence; `api` channels a
    `chat.typing` callback. Best effort: answered as soon as it is scheduled, and a platform
    failure is only logged. Asking again restarts the 25 s."""
    from agenthub import typing_indicator

    hub.typing.start(chat.id)
    return TypingOut(chat_id=chat.id, typing_seconds=typing_indicator.TYPING_SECONDS)
