"""Public identifiers: `{prefix}_{10 chars}` from a cryptographic random source (contract §2)."""

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits
_LENGTH = 10


def new_id(prefix: str) -> str:
    return f"{prefix}_" + "".join(secrets.choice(_ALPHABET) for _ in range(_LENGTH))
