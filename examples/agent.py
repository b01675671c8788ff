"""A minimal Agent Hub agent: Python's standard HTTP server and the `standardwebhooks` package.

The hub POSTs each batch of new contact messages here, signed with Standard Webhooks. The agent
checks the signature (a bad one gets 401) and answers inline with `{"reply": "..."}`, which the
hub stores as an AGENT message and sends to the contact. The guide is docs/agents.md.

    pip install standardwebhooks          # already installed with the hub
    AGENT_WEBHOOK_SECRET=whsec_... python examples/agent.py

It listens on http://127.0.0.1:8001/ (set HOST and PORT to change that; PORT=0 picks a free port)
and prints the URL to register as the agent's `webhook_url`.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Lock
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError

# The agent's `webhook_secret`, shown once when the agent was created.
WEBHOOK = Webhook(os.environ["AGENT_WEBHOOK_SECRET"])

# Answers by `webhook-id`. The hub retries a delivery (same webhook-id) when our answer did not
# reach it in time; the retry then gets the answer already worked out, not a second run of the work.
ANSWERS: OrderedDict[str, dict[str, Any]] = OrderedDict()
ANSWERS_KEPT = 1000
LOCK = Lock()


def answer(delivery: dict[str, Any]) -> dict[str, Any]:
    """The agent itself: here, echo the newest message this delivery is about."""
    new_ids = set(delivery["new_message_ids"])
    new = [m["content"] for m in delivery["messages"] if m["id"] in new_ids]
    return {"reply": f"echo: {new[-1] if new else ''}"}


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            # Checks the HMAC-SHA256 of "{webhook-id}.{webhook-timestamp}.{body}" and that the
            # timestamp is within 5 minutes, so a captured request cannot be replayed later.
            delivery = WEBHOOK.verify(body, dict(self.headers))
        except (WebhookVerificationError, ValueError):  # ValueError: a malformed header
            self.send_json(401, {"detail": "invalid signature"})
            return
        webhook_id = self.headers["webhook-id"]
        with LOCK:
            result = ANSWERS.get(webhook_id)
        if result is None:
            result = answer(delivery)
            with LOCK:
                ANSWERS[webhook_id] = result
                while len(ANSWERS) > ANSWERS_KEPT:
                    ANSWERS.popitem(last=False)
        print(f"{webhook_id} -> {json.dumps(result)}", flush=True)
        self.send_json(200, result)

    def send_json(self, status: int, data: dict[str, Any]) -> None:
        encoded = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(encoded)))
        self.end_headers()
        self.wfile.write(encoded)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per delivery is printed above; no access log


def main() -> None:
    host = os.environ.get("HOST", "127.0.0.1")
    server = ThreadingHTTPServer((host, int(os.environ.get("PORT", "8001"))), Handler)
    print(f"agent listening on http://{host}:{server.server_port}/", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
