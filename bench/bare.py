"""The baseline: a bare FastAPI endpoint that reads a Twilio form body and answers empty TwiML.

What any Twilio webhook must do at least, served the same way as the hub (uvicorn, one process).
No signature check, no database. (FastAPI's `Form` needs python-multipart, which the hub does not
install; the hub parses the body with `parse_qs` too.)
"""

from __future__ import annotations

from urllib.parse import parse_qs

from fastapi import FastAPI, Request, Response

TWIML_EMPTY = '<?xml version="1.0" encoding="UTF-8"?><Response/>'

app = FastAPI()


@app.post("/webhooks/whatsapp_twilio/{channel_id}")
async def receive(channel_id: str, request: Request) -> Response:
    params = parse_qs((await request.body()).decode(), keep_blank_values=True)
    if not params.get("MessageSid"):
        return Response(status_code=400)
    return Response(TWIML_EMPTY, media_type="text/xml")
