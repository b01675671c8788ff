"""The SSRF guard: with private URLs disallowed, agent and callback URLs must be public."""

from __future__ import annotations

import pytest

from agenthub.errors import BadRequest
from agenthub.netguard import ensure_public_url

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8001/",
        "http://localhost/hook",
        "http://10.1.2.3/",
        "http://192.168.0.10/",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/",
        "http://0.0.0.0/",
    ],
)
async def test_internal_addresses_are_refused(url: str) -> None:
    with pytest.raises(BadRequest):
        await ensure_public_url(url, allow_private=False)


async def test_public_address_is_accepted() -> None:
    await ensure_public_url("https://93.184.215.14/hook", allow_private=False)


async def test_private_allowed_when_configured() -> None:
    await ensure_public_url("http://127.0.0.1:8001/", allow_private=True)


async def test_non_http_scheme_is_refused_even_when_private_allowed() -> None:
    with pytest.raises(BadRequest):
        await ensure_public_url("file:///etc/passwd", allow_private=True)
