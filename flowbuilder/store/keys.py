"""API keys (the ``api_keys`` table): made, listed, revoked and verified.

A key is ``fb_`` + 43 URL-safe characters (256 random bits), shown once when it is made;
only its SHA-256 is stored, with its first 8 characters as a prefix users recognise.
"""

from __future__ import annotations

import hashlib
import secrets

import sqlalchemy as sa
from sqlmodel import col, select

from flowbuilder.store.db import Database, require
from flowbuilder.store.tables import ApiKey
from flowbuilder.store.values import new_id, now

API_KEY_PREFIX = "fb_"
"""Every API key starts with this, so leaked keys are easy to recognise and scan for."""
LAST_USED_RESOLUTION_S = 60.0
"""``api_keys.last_used_at`` is written at most once a minute per key (one write per
request would make every API call a database write)."""


def hash_key(key: str) -> str:
    """The stored form of an API key: its SHA-256 as 64 hex digits."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class ApiKeys:
    """The API keys in ``db``. Every method is one transaction and returns detached
    records."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create_api_key(self, name: str) -> tuple[str, ApiKey]:
        """Make a new API key; return ``(key, record)``. The key (``fb_`` + 43 URL-safe
        characters, 256 random bits) is shown once: only its SHA-256 is stored."""
        key = API_KEY_PREFIX + secrets.token_urlsafe(32)
        record = ApiKey(
            id=new_id(), name=name, prefix=key[:8], key_hash=hash_key(key), created_at=now()
        )
        with self.db.write() as s:
            s.add(record)
        return key, record

    def list_api_keys(self) -> list[ApiKey]:
        """Every key, revoked ones included, newest first."""
        query = select(ApiKey).order_by(col(ApiKey.created_at).desc(), col(ApiKey.id))
        with self.db.read() as s:
            return list(s.exec(query).all())

    def revoke_api_key(self, key_id: str) -> ApiKey:
        """Revoke a key (idempotent: the first revocation time is kept).

        Raises:
            NotFound: no such key.
        """
        with self.db.write() as s:
            record = require(s, ApiKey, key_id, "API key")
            if record.revoked_at is None:
                record.revoked_at = now()
                s.add(record)
            return record

    def get_api_key(self, key_id: str) -> ApiKey | None:
        """The record of the key with this id (revoked ones too), or None: one lookup by
        primary key, what a session bound to a key checks at each request."""
        with self.db.read() as s:
            return s.get(ApiKey, key_id)

    def verify_api_key(self, key: str) -> ApiKey | None:
        """The record of ``key``, or None when no such key was ever made (answer 401).

        A revoked key returns its record with ``revoked_at`` set (answer 403). Using a
        valid key updates ``last_used_at`` (at most once a minute).
        """
        if not key.startswith(API_KEY_PREFIX):
            return None
        query = select(ApiKey).where(col(ApiKey.key_hash) == hash_key(key))
        with self.db.read() as s:
            record = s.exec(query).first()
        if record is None or record.revoked_at is not None:
            return record
        t = now()
        last = record.last_used_at
        if last is None or (t - last).total_seconds() >= LAST_USED_RESOLUTION_S:
            with self.db.write() as s:
                s.exec(sa.update(ApiKey).where(col(ApiKey.id) == record.id).values(last_used_at=t))
            record.last_used_at = t
        return record


__all__ = ["API_KEY_PREFIX", "LAST_USED_RESOLUTION_S", "ApiKeys", "hash_key"]
