"""Bearer tokens never reach the access log."""

from __future__ import annotations

import logging

from agenthub.logs import RedactTokens


def test_websocket_token_is_redacted_from_access_log_records() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/ws?token=ah_secretvalue&last_event_id=3", "1.1", 101),
        None,
    )
    assert RedactTokens().filter(record)
    message = record.getMessage()
    assert "ah_secretvalue" not in message
    assert "/ws?token=[redacted]&last_event_id=3" in message
