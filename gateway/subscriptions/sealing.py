"""Webhook signing secrets, sealed at rest: AES-256-GCM under a key derived from
``CITYGRID_WEBHOOK_SECRET_KEY``.

A database dump alone does not let anyone sign as the gateway. A sealed secret names the key that
sealed it (``v1.<key id>.<nonce and ciphertext>``), so the key rotates: the new one seals, the keys
listed in ``CITYGRID_WEBHOOK_PREVIOUS_SECRET_KEYS`` still open what they sealed.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SECRET_PREFIX = "whsec_"  # noqa: S105 (the format's prefix, not a secret)
SECRET_BYTES = 32  # Standard Webhooks: between 24 and 64 bytes
# Seals where no key is configured (development and test; production requires one).
DEVELOPMENT_KEY = "citygrid development webhook secrets key"
_VERSION = "v1"
_AAD = b"citygrid webhook secret"


def new_secret() -> str:
    """A signing secret as the Standard Webhooks libraries take it: ``whsec_`` and base64."""
    return SECRET_PREFIX + base64.b64encode(os.urandom(SECRET_BYTES)).decode()


class SecretUnreadable(Exception):
    """A sealed secret that no configured key opens (the key that sealed it is no longer listed)."""


@dataclass(frozen=True)
class _Key:
    kid: str
    cipher: AESGCM

    @classmethod
    def of(cls, passphrase: str) -> _Key:
        material = hashlib.sha256(b"citygrid-webhook-seal\x00" + passphrase.encode()).digest()
        kid = hashlib.sha256(material).hexdigest()[:8]
        return cls(kid, AESGCM(material))


class Sealer:
    """Seals with the first key, opens with any of them."""

    def __init__(self, key: str, previous: Sequence[str] = ()) -> None:
        self._keys = [_Key.of(passphrase) for passphrase in (key, *previous)]
        self._by_kid = {key.kid: key for key in reversed(self._keys)}

    def seal(self, secret: str) -> str:
        key = self._keys[0]
        nonce = os.urandom(12)
        sealed = key.cipher.encrypt(nonce, secret.encode(), _AAD)
        return f"{_VERSION}.{key.kid}.{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def open(self, sealed: str) -> str:
        version, _, rest = sealed.partition(".")
        kid, _, payload = rest.partition(".")
        key = self._by_kid.get(kid)
        if version != _VERSION or key is None:
            raise SecretUnreadable(f"sealed under key {kid!r}, which is not configured")
        raw = base64.urlsafe_b64decode(payload)
        try:
            return key.cipher.decrypt(raw[:12], raw[12:], _AAD).decode()
        except InvalidTag:
            raise SecretUnreadable(f"does not open under key {kid!r}") from None
