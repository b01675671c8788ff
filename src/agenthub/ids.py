"""Public identifiers: `{prefix}_{10 chars}` from a cryptographic random source."""

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits
_LENGTH = 10


def new_id(prefix: str) -> str:
    # 96 random bits written in base 62: the 10 digits are uniform to within 1e-11, and this
    # is several times cheaper than ten `secrets.choice` calls (an id per stored row).
    number = int.from_bytes(secrets.token_bytes(12))
    digits = []
    for _ in range(_LENGTH):
        number, digit = divmod(number, 62)
        digits.append(_ALPHABET[digit])
    return f"{prefix}_" + "".join(digits)
