"""API keys: create, verify, revoke. Only a SHA-256 of each key is stored.

Details: a key is ``cc_<prefix>_<secret>`` with a 8-char prefix (lookup) and a 32-byte
url-safe secret, so SHA-256 (not a slow password hash) is enough: the key space cannot be
brute-forced. Comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, or_, update
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from billing.models import ApiKey, ApiRole, table_of


@dataclass(frozen=True)
class Principal:
    """Who is calling: a key's role and, for tenant keys, its customer."""

    key_id: int | None
    name: str
    role: ApiRole
    customer: str | None = None

    def can(self, *roles: ApiRole) -> bool:
        """True when this principal holds one of ``roles`` (admin holds every role)."""
        return self.role == ApiRole.admin or self.role in roles


def hash_key(key: str) -> str:
    """SHA-256 hex of a key."""
    return hashlib.sha256(key.encode()).hexdigest()


def _split(key: str) -> str | None:
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != "cc" or len(parts[1]) != 8:
        return None
    return parts[1]


def new_key() -> str:
    """A fresh random key ``cc_<8 hex>_<43 chars>``."""
    return f"cc_{secrets.token_hex(4)}_{secrets.token_urlsafe(32)}"


def is_well_formed(key: str) -> bool:
    """True when ``key`` has the ``cc_<8 hex>_<secret of 16+ chars>`` shape."""
    prefix = _split(key)
    return prefix is not None and len(key) >= 3 + 8 + 1 + 16


def create_key(
    engine: Engine,
    *,
    name: str,
    role: ApiRole,
    customer: str | None,
    now: datetime,
    key: str | None = None,
) -> str:
    """Store a key (random unless ``key`` is given, e.g. a bootstrap key) and return it in clear.

    Storing a given key whose prefix exists already is a no-op (idempotent bootstrap).
    Raises: ValueError for a customer scope on a non-read key or on a reserved ``__`` name, or
    for a malformed given key.
    """
    if role != ApiRole.read and customer is not None:
        raise ValueError("only read keys can be scoped to a customer")
    if customer is not None and customer.startswith("__"):
        raise ValueError(f"customer {customer!r}: names starting with __ are reserved")
    if key is not None and not is_well_formed(key):
        raise ValueError("a key must look like cc_<8 hex chars>_<16+ chars>")
    key = key or new_key()
    prefix = key.split("_", 2)[1]
    with Session(engine) as s:
        if s.exec(select(ApiKey).where(ApiKey.prefix == prefix)).first() is not None:
            return key
        s.add(
            ApiKey(
                name=name,
                prefix=prefix,
                key_hash=hash_key(key),
                role=role.value,
                customer=customer,
                created_at=now,
            )
        )
        s.commit()
    return key


def verify_key(engine: Engine, key: str) -> Principal | None:
    """The principal of a valid, unrevoked key, else None."""
    prefix = _split(key)
    if prefix is None:
        return None
    with Session(engine) as s:
        found = s.exec(select(ApiKey).where(ApiKey.prefix == prefix)).first()
    if found is None:
        return None
    if found.revoked_at is not None or not hmac.compare_digest(found.key_hash, hash_key(key)):
        return None
    return Principal(found.id, found.name, ApiRole(found.role), found.customer)


class LastAdminKeyError(Exception):
    """Revoking this key would leave no live admin key."""


def revoke_key(engine: Engine, *, prefix: str, now: datetime) -> bool:
    """Revoke a key by prefix; True if a live key was revoked, False if none has that prefix.

    Raises: LastAdminKeyError when it is the last live admin key (the update is refused in
    the same statement, so two admins revoking each other cannot both succeed on SQLite).
    """
    t = table_of(ApiKey)
    live = t.c.revoked_at.is_(None)
    other_admins = (
        sa_select(func.count())
        .select_from(t)
        .where(t.c.role == ApiRole.admin.value, live, t.c.prefix != prefix)
        .scalar_subquery()
    )
    with engine.begin() as conn:
        res = conn.execute(
            update(t)
            .where(t.c.prefix == prefix, live)
            .where(or_(t.c.role != ApiRole.admin.value, other_admins > 0))
            .values(revoked_at=now)
        )
        if res.rowcount:
            return True
        role = conn.execute(
            sa_select(t.c.role).where(t.c.prefix == prefix, live)
        ).scalar_one_or_none()
    if role is not None:
        raise LastAdminKeyError(f"key {prefix!r} is the last live admin key")
    return False


def list_keys(engine: Engine) -> list[ApiKey]:
    """Every key (hashes included; callers must not print them)."""
    with Session(engine) as s:
        return list(s.exec(select(ApiKey).order_by(ApiKey.id)).all())  # type: ignore[arg-type]
