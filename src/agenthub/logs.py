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
import logging
import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator

REDACTED = "[redacted]"

LogLevel = Annotated[
    Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
    BeforeValidator(lambda value: value.strip().upper() if isinstance(value, str) else value),
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
    (re.compile(r"(/bot)\d+:[\w-]+"), rf"\1{REDACTED}"),
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


def uvicorn_log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging config with the filter on every handler (uvicorn applies it again in
    each process of `--workers N`), and a root handler at `level` for the hub's own loggers
    and the libraries', so that they go through the filter too."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"redact": {"()": RedactSecrets}}
    for handler in config["handlers"].values():
        handler["filters"] = ["redact"]
    config["root"] = {"handlers": ["default"], "level": level}
    config["loggers"].update({name: {"level": q} for name, q in quiet_loggers(level).items()})
    return config
