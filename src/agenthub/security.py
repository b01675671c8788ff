"""Passwords (argon2id via pwdlib, off the event loop), bearer tokens and secrets at rest."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from typing import Any

import anyio.to_thread
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pwdlib import PasswordHash

_password_hash = PasswordHash.recommended()
TOKEN_PREFIX = "ah_"  # noqa: S105 - a marker, not a secret


async def hash_password(password: str) -> str:
    # ~100 ms of CPU: never on the event loop.
    return await anyio.to_thread.run_sync(_password_hash.hash, password)


async def verify_password(password: str, password_hash: str) -> bool:
    return await anyio.to_thread.run_sync(_password_hash.verify, password, password_hash)


async def burn_password_time(password: str) -> None:
    """Spend a hash's worth of time when the user does not exist (no username probing by timing)."""
    await anyio.to_thread.run_sync(_password_hash.hash, password)


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_webhook_secret() -> str:
    """A Standard Webhooks symmetric key: `whsec_` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_keys(value: str) -> list[str]:
    """`AGENTHUB_SECRET_KEY` as its keys: comma-separated, newest first. An empty one (a stray
    comma) is refused, in words that name the variable and never show a key."""
    keys = [key.strip() for key in value.split(",")]
    if not all(keys):
        raise ValueError(
            "AGENTHUB_SECRET_KEY holds an empty key: give one key, or several separated by "
            "commas, newest first (no empty entries, no trailing comma)"
        )
    return keys


def _fernet(key: str) -> Fernet:
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(key.encode()).digest()))


class SecretBox:
    """Authenticated encryption (Fernet) of credentials and signing secrets at rest.

    With several keys (a key rotation), the first encrypts and any of them decrypts
    (`MultiFernet`); `rotate` re-encrypts a stored value with the first one."""

    def __init__(self, secret_key: str) -> None:
        self._fernet = MultiFernet([_fernet(key) for key in secret_keys(secret_key)])

    def rotate(self, ciphertext: str) -> str:
        try:
            return self._fernet.rotate(ciphertext.encode()).decode()
        except InvalidToken as exc:
            raise RuntimeError(
                "cannot decrypt a stored secret with any key of AGENTHUB_SECRET_KEY"
            ) from exc

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, ciphertext: str) -> str:
        try:
            return self._fernet.decrypt(ciphertext.encode()).decode()
        except InvalidToken as exc:
            raise RuntimeError(
                "cannot decrypt a stored secret: was AGENTHUB_SECRET_KEY changed?"
            ) from exc

    def encrypt_json(self, value: dict[str, Any]) -> str:
        return self.encrypt(json.dumps(value, separators=(",", ":")))

    def decrypt_json(self, ciphertext: str) -> dict[str, Any]:
        value = json.loads(self.decrypt(ciphertext))
        assert isinstance(value, dict)
        return value
