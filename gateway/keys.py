"""API keys: ``cgk_<prefix>_<secret>``. The prefix finds the row; only a SHA-256 of the key is kept.

Keys are 256-bit random, so a fast hash is enough: there is nothing to brute-force.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

KEY_PREFIX = "cgk_"


@dataclass(frozen=True)
class IssuedKey:
    plaintext: str
    prefix: str
    digest: str


def issue_key() -> IssuedKey:
    prefix = secrets.token_hex(6)
    plaintext = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    return IssuedKey(plaintext=plaintext, prefix=prefix, digest=digest_of(plaintext))


def digest_of(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def prefix_of(plaintext: str) -> str | None:
    if not plaintext.startswith(KEY_PREFIX):
        return None
    parts = plaintext[len(KEY_PREFIX) :].split("_", 1)
    if len(parts) != 2 or len(parts[0]) != 12:
        return None
    return parts[0]


def matches(plaintext: str, digest: str) -> bool:
    return hmac.compare_digest(digest_of(plaintext), digest)
