"""Shared pieces of request/response schemas."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Username = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=64, pattern=r"^[\w.@+-]+$"),
]
Password = Annotated[str, StringConstraints(min_length=8, max_length=256)]
Email = Annotated[
    str, StringConstraints(strip_whitespace=True, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")
]


def _bounded_json(value: dict[str, Any]) -> dict[str, Any]:
    # A generous cap on nested client JSON (meta_data, config) so rows stay small.
    import json

    if len(json.dumps(value, default=str)) > 16_384:
        raise ValueError("must serialize to at most 16384 characters")
    return value


JsonObject = Annotated[dict[str, Any], AfterValidator(_bounded_json)]


class Schema(BaseModel):
    """Request bodies reject unknown fields, so a typo is a 422 and not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)
