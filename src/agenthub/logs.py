"""Secrets never reach the logs: one filter on every handler that writes a line.

Secrets pass through places that log: dashboards put their bearer token in the WebSocket URL
(`/ws?token=ah_…`, logged by uvicorn), Telegram puts the bot token in every Bot API URL (logged
by httpx2), a WhatsApp Cloud handshake carries `hub.verify_token=` in its query, and database
or Redis URLs may carry a password. A filter on one logger misses the others, and uvicorn's and
Celery's loggers write through handlers of their own (they do not propagate to the root). So
`RedactSecrets` sits on the handlers themselves: uvicorn gets it through its logging config (in
every worker process it spawns too), the Celery worker through its logging signals, and
`install_redaction()` puts it on every handler that already exists.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator

REDACTED = "[redacted]"

LogLevel = Annotated[
    Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
    BeforeValidator(lambda value: value.strip().upper() if isinstance(value, str) else value),
]
LogFormat = Annotated[
    Literal["text", "json"],
    BeforeValidator(lambda value: value.strip().lower() if isinstance(value, str) else value),
]

# (pattern, replacement), applied in order. Each keeps what names the secret and drops its value.
_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    # `Authorization: Bearer …` / `Basic …`, as a header line or in a dict's repr.
    (
        re.compile(
            r"""(authorization['"]?\s*[:=]\s*['"]?(?:(?:bearer|basic|token)\s+)?)[^\s'",;}]+""",
            re.IGNORECASE,
        ),
        rf"\1{REDACTED}",
    ),
    (re.compile(r"\b(bearer\s+)[^\s'\",;}]+", re.IGNORECASE), rf"\1{REDACTED}"),
    # Telegram Bot API URLs: `/bot<id>:<token>/method` and `/file/bot<id>:<token>/path`.
    # (Also percent-encoded, as uvicorn logs a request path: `/bot<id>%3A<token>`.)
    (re.compile(r"(/bot)\d+(?::|%3[aA])[\w-]+"), rf"\1{REDACTED}"),
    # `scheme://user:password@host` (database, Redis, an agent's or callback URL).
    # (Not when the password is already masked, as kombu prints it: `redis://:**@host`.)
    (re.compile(r"(://[^\s/:@]*:)(?!\*+@)[^\s/@]+@"), rf"\1{REDACTED}@"),
    # Query and form values: `token=`, `access_token=`, `hub.verify_token=`, `secret=`, ….
    (
        re.compile(r"((?:token|secret|password|passwd|api[_-]?key)=)[^\s&'\"]+", re.IGNORECASE),
        rf"\1{REDACTED}",
    ),
    # The hub's own bearer tokens and Standard Webhooks keys, wherever they stand.
    (re.compile(r"\bah_[\w-]{16,}"), f"ah_{REDACTED}"),
    (re.compile(r"\bwhsec_[A-Za-z0-9+/=]+"), f"whsec_{REDACTED}"),
)
# Every rule above needs one of these (in the lower-cased text): the common line, such as the
# access line of a webhook, costs a few substring checks and no regex.
_MARKERS = ("authorization", "bearer", "/bot", "://", "token=", "secret=", "passw", "key=")
_MARKERS_ANY_CASE = ("ah_", "whsec_")


def _may_hold_secret(text: str) -> bool:
    if any(marker in text for marker in _MARKERS_ANY_CASE):
        return True
    lowered = text.lower()
    return any(marker in lowered for marker in _MARKERS)


def redact(text: str) -> str:
    """`text` with every secret the hub knows the shape of replaced by `[redacted]`."""
    if not _may_hold_secret(text):
        return text
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text


_PLAIN = (int, float, bool, type(None))
_exception_formatter = logging.Formatter()


class RedactSecrets(logging.Filter):
    """Rewrites a record so that no formatter can print a secret from it: the final message
    (`getMessage()`, i.e. `msg % args`), the traceback text and the stack text."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True  # a broken format string: the handler reports it (and redacts nothing)
        if _may_hold_secret(message):
            _redact_message(record, message)
        if record.exc_info or record.exc_text or record.stack_info:
            _redact_tracebacks(record)
        return True


def _redact_message(record: logging.LogRecord, message: str) -> None:
    clean = redact(message)
    if clean == message:
        return
    # Some formatters read the arguments (uvicorn's access formatter unpacks them into
    # client, method, path…): redact them one by one and keep their shape when that suffices…
    record.args = _redact_args(record.args)
    if record.getMessage() != clean:
        # …else the message is fixed once and for all.
        record.msg, record.args = clean, ()


def _redact_args(args: Any) -> Any:
    if isinstance(args, tuple):
        return tuple(_redact_arg(arg) for arg in args)
    if isinstance(args, dict):
        return {key: _redact_arg(value) for key, value in args.items()}
    return args


def _redact_arg(arg: Any) -> Any:
    if isinstance(arg, _PLAIN):
        return arg
    text = arg if isinstance(arg, str) else str(arg)  # an httpx2 URL, an exception…
    clean = redact(text)
    return arg if clean == text else clean


def _redact_tracebacks(record: logging.LogRecord) -> None:
    # Formatters reuse `exc_text` when it is set: formatting it here lets us redact it.
    if isinstance(record.exc_info, tuple) and not record.exc_text:
        record.exc_text = _exception_formatter.formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


_FILTER = RedactSecrets()


def install_redaction() -> None:
    """Put the filter on every handler that exists now: the root logger's, those of loggers
    that do not propagate (uvicorn's, Celery's), and logging's last-resort handler."""
    for handler in _all_handlers():
        if not any(isinstance(f, RedactSecrets) for f in handler.filters):
            handler.addFilter(_FILTER)


def _all_handlers() -> list[logging.Handler]:
    loggers: list[Any] = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    handlers = [h for lg in loggers if isinstance(lg, logging.Logger) for h in lg.handlers]
    if logging.lastResort is not None:
        handlers.append(logging.lastResort)
    return handlers


def quiet_loggers(level: str) -> dict[str, str]:
    """Loggers held at WARNING unless `level` is DEBUG: httpx2 logs one line per request (a
    send per message is noise, and Bot API URLs carry the bot token), and Celery beat one line
    per sweep, every second. Their warnings and errors still show."""
    if level == "DEBUG":
        return {}
    return {name: "WARNING" for name in ("httpx2", "httpcore2", "celery.beat")}


def apply_quiet_loggers(level: str) -> None:
    for name, quiet in quiet_loggers(level).items():
        logging.getLogger(name).setLevel(quiet)


def uvicorn_log_config(level: str, log_format: str = "text") -> dict[str, Any]:
    """uvicorn's logging config with the filter on every handler (uvicorn applies it again in
    each process of `--workers N`), and a root handler at `level` for the hub's own loggers
    and the libraries', so that they go through the filter too. With `json`, every handler
    writes `JsonFormatter` lines."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"redact": {"()": RedactSecrets}}
    for handler in config["handlers"].values():
        handler["filters"] = ["redact"]
    if log_format == "json":
        config["formatters"] = {name: {"()": JsonFormatter} for name in config["formatters"]}
    config["root"] = {"handlers": ["default"], "level": level}
    config["loggers"].update({name: {"level": q} for name, q in quiet_loggers(level).items()})
    return config


# --- JSON lines and request ids ------------------------------------------------------------

# The request being served, for every line logged while it is (uvicorn's access line too: it
# is written from inside the app's `send`).
REQUEST_ID: ContextVar[str | None] = ContextVar("agenthub_request_id", default=None)
# Set by `tracing.setup` when tracing is on: the current trace id, or None.
_trace_id_source: Callable[[], str | None] | None = None
# uvicorn's access line: `%s - "%s %s HTTP/%s" %d` with these arguments.
_ACCESS_FIELDS = ("client", "method", "path", "http_version", "status")


def set_trace_id_source(source: Callable[[], str | None] | None) -> None:
    global _trace_id_source
    _trace_id_source = source


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and `request_id` / `trace_id`
    when there is one. Records reach it already redacted (`RedactSecrets` is a handler filter,
    which runs before the formatter)."""

    def format(self, record: logging.LogRecord) -> str:
        line: str = json.dumps(_json_fields(record, self), ensure_ascii=False, default=str)
        return line


def _json_fields(record: logging.LogRecord, formatter: logging.Formatter) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
        "level": record.levelname,
        "logger": record.name,
        "message": record.getMessage(),
    }
    args = record.args
    if record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
        fields.update(zip(_ACCESS_FIELDS, args, strict=True))
    request_id = REQUEST_ID.get()
    if request_id is not None:
        fields["request_id"] = request_id
    if _trace_id_source is not None and (trace_id := _trace_id_source()):
        fields["trace_id"] = trace_id
    if record.exc_info and not record.exc_text:
        record.exc_text = formatter.formatException(record.exc_info)
    if record.exc_text:
        fields["exception"] = record.exc_text
    if record.stack_info:
        fields["stack"] = record.stack_info
    return fields


def json_line(logger: str, message: str, level: int = logging.INFO) -> str:
    """`message` as a JSON log line, for output written before logging is configured."""
    record = logging.LogRecord(logger, level, __file__, 0, message, (), None)
    RedactSecrets().filter(record)
    return JsonFormatter().format(record)


def install_json_format() -> None:
    """Every existing handler writes JSON lines (the Celery worker's, after it set them up)."""
    for handler in _all_handlers():
        if not isinstance(handler.formatter, JsonFormatter):
            handler.setFormatter(JsonFormatter())


_REQUEST_ID_HEADER = b"x-request-id"
_REQUEST_ID_OK = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class RequestIdMiddleware:
    """`X-Request-ID`: taken from the request when it is a plausible id (letters, digits and
    `._:-`, at most 128: it goes into every log line of the request), else generated; set for
    the request's log lines and echoed in the response. Pure ASGI, one header scan: it wraps
    every webhook."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope["headers"])
        encoded = request_id.encode()
        token = REQUEST_ID.set(request_id)

        async def send_with_id(message: Any) -> None:
            if message["type"] in ("http.response.start", "websocket.accept"):
                message["headers"] = [*message.get("headers", ()), (_REQUEST_ID_HEADER, encoded)]
            await send(message)

        await self.app(scope, receive, send_with_id)
        # Not in a `finally`: when the app raises, uvicorn logs the traceback (and the 500's
        # access line) after this returns, in the request's own task, whose context ends with it.
        REQUEST_ID.reset(token)


def _request_id(headers: Any) -> str:
    for name, value in headers:
        if name == _REQUEST_ID_HEADER:
            given: str = value.decode("latin-1")
            if _REQUEST_ID_OK.fullmatch(given):
                return given
            break
    return os.urandom(16).hex()  # as random as uuid4, a quarter of its cost
