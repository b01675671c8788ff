"""The console's admin pages: channels, agents, users (with their channel grants) and canned
responses. ADMIN only: a MEMBER gets 403 on every page and every POST.

Each POST authenticates like the API (`deps.get_principal`: the session cookie plus the hub's
own `Origin`, then the admin check of `AdminUser`), calls the API's own service, and either
redirects (303) back to the page or, when the service refuses, renders the page again with the
error in it and the service's status. The values a platform or an agent needs once (an `api`
channel's generated secret, an agent's token and webhook secret, a rotated token) are shown in
the answer to the POST that made them, and never again.
"""

from __future__ import annotations

from fastapi import APIRouter

from agenthub.console.admin import agents, canned, channels, users

router = APIRouter(include_in_schema=False)
for page in (channels, agents, users, canned):
    router.include_router(page.router)
