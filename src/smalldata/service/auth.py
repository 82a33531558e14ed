"""API keys: made by `smalldata api-key create`, shown once, stored only as a sha256 digest.

A key is 32 random bytes, so a plain digest is enough (there is nothing to guess that a slow hash
would protect); lookups compare digests, never keys.
"""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select

from smalldata.service.storage import ApiKey

PREFIX = "sd_"


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create_key(sessions, name: str = "") -> str:
    key = PREFIX + secrets.token_urlsafe(32)
    with sessions.begin() as session:
        session.add(ApiKey(name=name, digest=digest(key)))
    return key


def is_valid(sessions, key: str | None) -> bool:
    if not key or len(key) > 200:
        return False
    with sessions() as session:
        return session.scalars(select(ApiKey.id).where(ApiKey.digest == digest(key))).first() is not None


def key_from_headers(headers) -> str | None:
    """`X-API-Key: KEY` or `Authorization: Bearer KEY`."""
    if headers.get("x-api-key"):
        return headers["x-api-key"].strip()
    scheme, _, value = headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None
