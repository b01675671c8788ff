"""Rich messages, one channel-neutral model: reply buttons, lists and templates.

A USER or AGENT message may carry one of them next to its text (`content` is the body). They
are validated once, here, against the strictest platform's limits (WhatsApp's), stored in the
message's `meta_data` (`buttons`, `list`, `template`) and rendered by each platform adapter
when the message goes out (`platforms/*.py`). Limits a platform adds on top (Telegram's
64-byte `callback_data`) are the adapter's `check_rich`.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

log = logging.getLogger(__name__)

MAX_BUTTONS = 3
BUTTON_TITLE_MAX = 20
BUTTON_ID_MAX = 256
LIST_BUTTON_MAX = 20
LIST_SECTIONS_MAX = 10
LIST_ROWS_MAX = 10  # across all sections together
SECTION_TITLE_MAX = 24
ROW_ID_MAX = 200
ROW_TITLE_MAX = 24
ROW_DESCRIPTION_MAX = 72
# The body text next to the choices (WhatsApp: 1024 with buttons, 4096 with a list).
BUTTONS_BODY_MAX = 1024
LIST_BODY_MAX = 4096
TEMPLATE_PARAMETERS_MAX = 100
TEMPLATE_VALUE_MAX = 1024
RICH_KEYS = ("buttons", "list", "template")


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


def _text(max_length: int) -> Any:
    return Annotated[
        str, StringConstraints(min_length=1, max_length=max_length), AfterValidator(_not_blank)
    ]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Button(_Strict):
    id: _text(BUTTON_ID_MAX)  # type: ignore[valid-type]
    title: _text(BUTTON_TITLE_MAX)  # type: ignore[valid-type]


class ListRow(_Strict):
    id: _text(ROW_ID_MAX)  # type: ignore[valid-type]
    title: _text(ROW_TITLE_MAX)  # type: ignore[valid-type]
    description: _text(ROW_DESCRIPTION_MAX) | None = None  # type: ignore[valid-type]


class ListSection(_Strict):
    title: _text(SECTION_TITLE_MAX)  # type: ignore[valid-type]
    rows: list[ListRow] = Field(min_length=1, max_length=LIST_ROWS_MAX)


class ListMenu(_Strict):
    button: _text(LIST_BUTTON_MAX)  # type: ignore[valid-type]
    sections: list[ListSection] = Field(min_length=1, max_length=LIST_SECTIONS_MAX)

    @model_validator(mode="after")
    def _rows(self) -> ListMenu:
        rows = [row for section in self.sections for row in section.rows]
        if len(rows) > LIST_ROWS_MAX:
            raise ValueError(f"at most {LIST_ROWS_MAX} rows in all sections together")
        if len({row.id for row in rows}) != len(rows):
            raise ValueError("row ids must be unique")
        return self


def _unique_buttons(buttons: list[Button]) -> list[Button]:
    if len({b.title for b in buttons}) != len(buttons):
        raise ValueError("button titles must be unique")
    if len({b.id for b in buttons}) != len(buttons):
        raise ValueError("button ids must be unique")
    return buttons


Buttons = Annotated[
    list[Button], Field(min_length=1, max_length=MAX_BUTTONS), AfterValidator(_unique_buttons)
]

TemplateName = Annotated[
    str, StringConstraints(min_length=1, max_length=512, pattern=r"^[A-Za-z0-9_.-]+$")
]
TemplateLanguage = Annotated[
    str,
    StringConstraints(
        min_length=2, max_length=16, pattern=r"^[A-Za-z]{2,3}([_-][A-Za-z0-9]{2,8})*$"
    ),
]
TemplateValue = Annotated[str, StringConstraints(min_length=1, max_length=TEMPLATE_VALUE_MAX)]
TemplateKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_]{1,64}$")]


class Template(_Strict):
    """A pre-approved message: `parameters` a list (positional, `{{1}}`, `{{2}}`…) or an
    object (named, `{{first_name}}`)."""

    name: TemplateName = Field(
        description="WhatsApp Cloud: the template's name; Twilio: its Content SID (`HX…`)"
    )
    language: TemplateLanguage | None = Field(
        default=None, description="e.g. `en_US` (required on whatsapp_cloud)"
    )
    parameters: (
        Annotated[list[TemplateValue], Field(max_length=TEMPLATE_PARAMETERS_MAX)]
        | Annotated[dict[TemplateKey, TemplateValue], Field(max_length=TEMPLATE_PARAMETERS_MAX)]
    ) = Field(default_factory=list)

    def readable(self) -> str:
        """The stored message's `content`: the name and the values."""
        values = (
            ", ".join(self.parameters)
            if isinstance(self.parameters, list)
            else ", ".join(f"{k}={v}" for k, v in self.parameters.items())
        )
        language = f" ({self.language})" if self.language else ""
        return f"[template {self.name}{language}]" + (f" {values}" if values else "")


class RichReply(_Strict):
    """One object in an agent's inline `replies`: text with buttons or a list."""

    text: _text(LIST_BODY_MAX)  # type: ignore[valid-type]
    buttons: Buttons | None = None
    list: ListMenu | None = None

    @model_validator(mode="after")
    def _one(self) -> RichReply:
        if self.buttons is not None and self.list is not None:
            raise ValueError("buttons or list, not both")
        if self.buttons is not None and len(self.text) > BUTTONS_BODY_MAX:
            raise ValueError(f"text: at most {BUTTONS_BODY_MAX} characters with buttons")
        return self

    def meta(self) -> dict[str, Any]:
        return rich_meta(self.buttons, self.list, None)


def rich_meta(
    buttons: list[Button] | None, menu: ListMenu | None, template: Template | None
) -> dict[str, Any]:
    """The `meta_data` keys that carry the rich content, as stored."""
    meta: dict[str, Any] = {}
    if buttons is not None:
        meta["buttons"] = [b.model_dump(exclude_none=True) for b in buttons]
    if menu is not None:
        meta["list"] = menu.model_dump(exclude_none=True)
    if template is not None:
        meta["template"] = template.model_dump(exclude_none=True)
    return meta


class Rich(BaseModel):
    """What an adapter reads back from a stored message's `meta_data` (re-validated: a
    message stored by hand with a broken `buttons` is refused by the platform send, not sent
    half-rendered)."""

    buttons: Buttons | None = None
    list: ListMenu | None = None
    template: Template | None = None


def rich_of(meta_data: dict[str, Any]) -> Rich | None:
    """The message's rich content, or None for a plain message. Raises `ValueError` when the
    stored content is not valid."""
    present = {key: meta_data[key] for key in RICH_KEYS if meta_data.get(key) is not None}
    if not present:
        return None
    if len(present) > 1:
        raise ValueError(f"one of {', '.join(RICH_KEYS)} at most")
    try:
        return Rich.model_validate(present)
    except ValidationError as exc:
        raise ValueError(f"invalid rich content: {exc.errors()[0]['msg']}") from None


def positional(template: Template) -> dict[str, str]:
    """The parameters as Twilio's `ContentVariables` (positional → `{"1": v1, "2": v2}`)."""
    if isinstance(template.parameters, list):
        return {str(n): value for n, value in enumerate(template.parameters, start=1)}
    return dict(template.parameters)


def parse_reply(item: Any) -> tuple[str, dict[str, Any]] | None:
    """One entry of an agent's inline `replies`: a string, or an object with text and buttons or
    a list. Returns (text, rich meta_data), or None (with a log line) when it is not valid."""
    if isinstance(item, str):
        return (item, {}) if item.strip() else None
    if not isinstance(item, dict):
        return None
    try:
        reply = RichReply.model_validate(item)
    except ValidationError as exc:
        first = exc.errors()[0]
        log.warning(
            "an agent's inline reply object was dropped: %s at %s",
            first["msg"],
            ".".join(str(part) for part in first["loc"]) or "(the object)",
        )
        return None
    return reply.text, reply.meta()
