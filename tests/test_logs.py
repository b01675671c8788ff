"""No secret reaches a log line: the redaction filter on every shape of secret the hub knows,
on the records of the loggers that carry them (uvicorn's, httpx2's, the hub's), and its
installation on every handler. tests/test_secrets_in_logs.py checks the real processes."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from pydantic import ValidationError
from uvicorn.logging import AccessFormatter

from agenthub.logs import (
    RedactSecrets,
    install_redaction,
    quiet_loggers,
    redact,
    uvicorn_log_config,
)
from agenthub.security import new_token, new_webhook_secret
from agenthub.settings import Settings

# Fixed values of the real shapes: parameter ids must be the same in every xdist worker.
USER_TOKEN = "ah_6ccy9yvyzZYtCxleEnHHDY1jBfJjYAgqlNQ5H8NZPCo"
WHSEC = "whsec_4NwAEQu1cjgGE1KxqoyFHgUQK/LJ0+6yBTAyFGXQn3g="
BOT_TOKEN = "7311234567:AAHk3vXJ9mQ2pL8nR4sT6uW0yZ1aB3cD5eF"


def record(msg: Any, *args: Any, name: str = "test", exc_info: Any = None) -> logging.LogRecord:
    return logging.LogRecord(name, logging.INFO, __file__, 1, msg, args or None, exc_info)


def filtered(msg: Any, *args: Any, **kwargs: Any) -> logging.LogRecord:
    rec = record(msg, *args, **kwargs)
    assert RedactSecrets().filter(rec)
    return rec


@pytest.mark.parametrize(
    ("line", "secret", "kept"),
    [
        (f"token {USER_TOKEN} used", USER_TOKEN, "token ah_[redacted] used"),
        (f"GET /ws?token={USER_TOKEN}&last_event_id=3", USER_TOKEN, "/ws?token=[redacted]&last"),
        ("GET /webhooks/whatsapp_cloud/chn_1?hub.verify_token=vt-42&hub.challenge=7", "vt-42",
         "hub.verify_token=[redacted]&hub.challenge=7"),
        ("https://x.test/cb?access_token=EAAG0x&id=1", "EAAG0x", "access_token=[redacted]&id=1"),
        (f"POST https://api.telegram.org/bot{BOT_TOKEN}/sendMessage", BOT_TOKEN.split(":")[1],
         "https://api.telegram.org/bot[redacted]/sendMessage"),
        (f"GET http://127.0.0.1:8081/file/bot{BOT_TOKEN}/photos/f.jpg", BOT_TOKEN,
         "/file/bot[redacted]/photos/f.jpg"),
        (f"secret {WHSEC} generated", WHSEC.removeprefix("whsec_"), "secret whsec_[redacted] gen"),
        ("Authorization: Bearer opaque-42", "opaque-42", "Authorization: Bearer [redacted]"),
        ("authorization: Basic QUN4eDp0b2s=", "QUN4eDp0b2s=", "authorization: Basic [redacted]"),
        ("headers={'Authorization': 'Basic QUN4eDp0b2s='}", "QUN4eDp0b2s=",
         "'Authorization': 'Basic [redacted]'"),
        ("sent with bearer opaque-42", "opaque-42", "bearer [redacted]"),
        ("postgresql+psycopg://agenthub:pg-pass-9@db:5432/agenthub", "pg-pass-9",
         "postgresql+psycopg://agenthub:[redacted]@db:5432/agenthub"),
        ("Connected to redis://:r3dis@127.0.0.1:6379/0", "r3dis", "redis://:[redacted]@127."),
        ("POST /login password=hunter2&user=a", "hunter2", "password=[redacted]&user=a"),
    ],
)  # fmt: skip
def test_each_shape_of_secret_is_redacted(line: str, secret: str, kept: str) -> None:
    assert secret in line
    clean = redact(line)
    assert secret not in clean
    assert kept in clean


def test_lines_without_secrets_are_left_as_they_are() -> None:
    for line in [
        '127.0.0.1:5000 - "POST /webhooks/telegram/chn_AbCdEfGhIj HTTP/1.1" 200',
        "Connected to redis://:**@127.0.0.1:6379/0",  # kombu masks it already
        "Uvicorn running on http://127.0.0.1:8000 (Press CTRL+C to quit)",
        "delivery dlv_0123456789 to agt_0123456789 failed: 503",
    ]:
        assert redact(line) == line


def test_the_common_access_line_is_not_rewritten() -> None:
    """The webhook hot path logs this line per request: the filter leaves it untouched."""
    args = ("127.0.0.1:5000", "POST", "/webhooks/telegram/chn_AbCdEfGhIj", "1.1", 200)
    rec = filtered('%s - "%s %s HTTP/%s" %d', *args, name="uvicorn.access")
    assert rec.args == args and rec.msg == '%s - "%s %s HTTP/%s" %d'


def test_access_log_record_keeps_its_arguments_for_uvicorns_formatter() -> None:
    path = f"/ws?token={USER_TOKEN}&last_event_id=3"
    rec = filtered('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", path, "1.1", 101)
    line = AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s').format(rec)
    assert USER_TOKEN not in line
    assert '"GET /ws?token=[redacted]&last_event_id=3 HTTP/1.1" 101' in line


def test_websocket_line_of_uvicorn_error_is_redacted() -> None:
    path = f"/ws?token={USER_TOKEN}"
    rec = filtered('%s - "WebSocket %s" [accepted]', "127.0.0.1:5000", path, name="uvicorn.error")
    assert rec.getMessage() == '127.0.0.1:5000 - "WebSocket /ws?token=[redacted]" [accepted]'


def test_httpx2_request_line_with_a_url_object_is_redacted() -> None:
    url = httpx2.URL(f"https://api.telegram.org/bot{BOT_TOKEN}/sendMessage")
    rec = filtered('HTTP Request: %s %s "%s %d %s"', "POST", url, "HTTP/1.1", 200, "OK")
    assert rec.getMessage() == (
        'HTTP Request: POST https://api.telegram.org/bot[redacted]/sendMessage "HTTP/1.1 200 OK"'
    )


def test_a_secret_made_by_formatting_is_redacted_and_the_args_cleared() -> None:
    """`token=%s` % (value,): no argument alone looks like a secret; the message does."""
    rec = filtered("callback %s?token=%s", "https://agent.test/cb", "abc123")
    assert rec.getMessage() == "callback https://agent.test/cb?token=[redacted]"
    assert not rec.args


def test_a_message_object_is_redacted() -> None:
    rec = filtered(ValueError(f"bad token {USER_TOKEN}"))
    assert USER_TOKEN not in rec.getMessage()


def test_tracebacks_are_redacted() -> None:
    try:
        raise RuntimeError(f"GET https://api.telegram.org/bot{BOT_TOKEN}/getFile failed")
    except RuntimeError:
        import sys

        rec = filtered("send failed", exc_info=sys.exc_info())
    text = logging.Formatter().format(rec)
    assert "Traceback" in text and "bot[redacted]/getFile" in text
    assert BOT_TOKEN not in text


@pytest.fixture
def own_logger() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger with a handler of its own that does not propagate, as uvicorn's and Celery's."""
    stream = io.StringIO()
    logger = logging.getLogger("tests.logs.own")
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)


def test_install_redaction_covers_loggers_that_do_not_propagate(
    own_logger: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = own_logger
    install_redaction()
    install_redaction()  # idempotent: one filter per handler
    logger.info("GET /ws?token=%s", USER_TOKEN)
    assert stream.getvalue() == "GET /ws?token=[redacted]\n"
    for handler in logger.handlers:
        assert sum(isinstance(f, RedactSecrets) for f in handler.filters) == 1


def test_celery_logging_signals_install_the_filter(
    own_logger: tuple[logging.Logger, io.StringIO],
) -> None:
    """The worker hooks Celery's logging setup: its handlers get the filter once it added them."""
    from celery.signals import after_setup_logger

    import agenthub.runtime.celery_jobs  # noqa: F401 - connects the signal handlers

    logger, stream = own_logger
    after_setup_logger.send(sender=None, logger=logging.getLogger(), loglevel=logging.INFO)
    logger.info("POST https://api.telegram.org/bot%s/sendMessage", BOT_TOKEN)
    assert BOT_TOKEN.split(":")[1] not in stream.getvalue()


def test_uvicorn_config_puts_the_filter_on_every_handler_and_a_root_handler() -> None:
    config = uvicorn_log_config("INFO")
    assert config["filters"]["redact"]["()"] is RedactSecrets
    assert config["handlers"] and all(
        h["filters"] == ["redact"] for h in config["handlers"].values()
    )
    assert config["root"] == {"handlers": ["default"], "level": "INFO"}
    assert config["loggers"]["httpx2"] == {"level": "WARNING"}
    assert "httpx2" not in uvicorn_log_config("DEBUG")["loggers"]


def test_noisy_loggers_are_quiet_unless_debug() -> None:
    assert quiet_loggers("INFO") == {
        "httpx2": "WARNING",
        "httpcore2": "WARNING",
        "celery.beat": "WARNING",
    }
    assert quiet_loggers("WARNING")["celery.beat"] == "WARNING"
    assert quiet_loggers("DEBUG") == {}


def test_log_level_setting() -> None:
    assert Settings(_env_file=None).log_level == "INFO"  # type: ignore[call-arg]
    assert Settings(log_level=" debug ", _env_file=None).log_level == "DEBUG"  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        Settings(log_level="verbose", _env_file=None)  # type: ignore[call-arg]


def test_the_fixed_samples_have_the_shapes_the_hub_generates() -> None:
    token, whsec = new_token(), new_webhook_secret()
    assert USER_TOKEN[:3] == token[:3] and len(USER_TOKEN) == len(token)
    assert WHSEC[:6] == whsec[:6] and len(WHSEC) == len(whsec)
