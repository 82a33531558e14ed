"""API keys: made by `smalldata api-key create`, shown once, stored only as a sha256 digest.

A key belongs to an owner, a user or a team: every key of an owner sees and changes that owner's
projects, and no other's. Keys can be listed and revoked (`smalldata api-key list` / `revoke`).
A key is 32 random bytes, so a plain digest is enough (there is nothing to guess that a slow hash
would protect); lookups compare digests, never keys.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from smalldata.service.storage import DEFAULT_OWNER, ApiKey, now

PREFIX = "sd_"
KEY_RECHECK_S = 5.0  # a running service looks a key up again after this long: a revoked key stops within it
OWNER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}")  # a user or team name: no spaces, no markup


class KeyRequestError(ValueError):
    """A key request the CLI refuses, with what to do (an owner name it cannot take, an unknown key id)."""


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def check_owner(owner: str) -> str:
    if not OWNER_NAME.fullmatch(owner or ""):
        raise KeyRequestError(f"{owner!r} cannot name an owner: use letters, digits and . _ @ - (at most 100), "
                        "e.g. --owner alice or --owner vision-team")
    return owner


def create_key(sessions, name: str = "", owner: str = DEFAULT_OWNER) -> str:
    key = PREFIX + secrets.token_urlsafe(32)
    with sessions.begin() as session:
        session.add(ApiKey(name=name, owner=check_owner(owner), digest=digest(key)))
    return key


def owner_of(sessions, key: str | None) -> str | None:
    """The owner of a valid key; None for an unknown or revoked one."""
    if not key or len(key) > 200:
        return None
    with sessions() as session:
        return session.scalars(select(ApiKey.owner).where(ApiKey.digest == digest(key), ApiKey.revoked.is_(None))).first()


def is_valid(sessions, key: str | None) -> bool:
    return owner_of(sessions, key) is not None


@dataclass
class KeyInfo:
    id: int
    name: str
    owner: str
    created: datetime
    revoked: datetime | None


def list_keys(sessions) -> list[KeyInfo]:
    with sessions() as session:
        return [KeyInfo(k.id, k.name, k.owner, k.created, k.revoked)
                for k in session.scalars(select(ApiKey).order_by(ApiKey.id)).all()]


def revoke(sessions, key_id: int) -> KeyInfo:
    """Revoke key `key_id` (running services stop taking it within `KEY_RECHECK_S`); the row stays."""
    with sessions.begin() as session:
        key = session.get(ApiKey, key_id)
        if key is None:
            raise KeyRequestError(f"there is no key {key_id}: `smalldata api-key list` shows the keys and their ids")
        if key.revoked is None:
            key.revoked = now()
        return KeyInfo(key.id, key.name, key.owner, key.created, key.revoked)


def is_loopback(host: str) -> bool:
    """Whether an address to listen on answers only this machine (127.0.0.1, ::1, localhost)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to any address
        return False


# Headers a reverse proxy adds: a request that carries one came from elsewhere through a proxy on this
# machine, so a server on loopback is not answering this machine only.
PROXY_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")


class KnownKeys:
    """Owners of the keys seen lately, so that a prediction pays no database trip for its key; each
    is looked up again after `KEY_RECHECK_S`, so that a revoked key stops working soon after."""

    def __init__(self, sessions):
        self._sessions = sessions
        self._owners: dict[str, tuple[str | None, float]] = {}  # digest -> (owner or None, when looked up)
        self._lock = threading.Lock()
        self._some_made = False  # once a key exists it stays (revoked keys keep their row)

    @property
    def some_made(self) -> bool:
        """A key is known to exist (no database trip): `none_made` has seen one."""
        return self._some_made

    def none_made(self) -> bool:
        """Whether no key was ever made here. A revoked key counts: revoking every key must not open
        the service to anyone. Asked of the database each time until a key appears (a key made by
        `smalldata api-key create` while the service runs takes effect at once)."""
        if self._some_made:
            return False
        with self._sessions() as session:
            self._some_made = session.scalar(select(ApiKey.id).limit(1)) is not None
        return not self._some_made

    def fresh(self, key: str) -> tuple[bool, str | None]:
        """(whether a recent lookup is at hand, its owner)."""
        with self._lock:
            found = self._owners.get(digest(key))
        if found is None or time.monotonic() - found[1] > KEY_RECHECK_S:
            return False, None
        return True, found[0]

    def look_up(self, key: str) -> str | None:
        owner = owner_of(self._sessions, key)
        with self._lock:
            if len(self._owners) > 10_000:  # a client trying many wrong keys cannot grow this without end
                self._owners.clear()
            self._owners[digest(key)] = (owner, time.monotonic())
        return owner
