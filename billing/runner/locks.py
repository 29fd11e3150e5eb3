"""One lock per job across worker processes, released by the OS when its holder dies.

- PostgreSQL: a session-level advisory lock (``pg_try_advisory_lock``) on a dedicated
  connection held for the run. kill -9 closes the socket and the server drops the lock at
  once; a holder that vanishes without closing (a partitioned node) is dropped by TCP
  keepalives within ``lease_s``. The key hashes the schema with the job name, so stores in
  different schemas of one database never contend.
- SQLite: ``flock`` on ``<database file>.<job>.lock`` beside the database (processes on one
  host share the file, as they share the SQLite file itself); an in-memory database uses a
  process-local lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol

from sqlalchemy import text
from sqlalchemy.engine import Engine


class JobLock(Protocol):
    """``hold(job)`` yields True while this process holds the job's lock, False if another does."""

    def hold(self, job: str) -> AbstractContextManager[bool]: ...


def _key(namespace: str, job: str) -> int:
    """A signed 64-bit advisory lock key. Details: first 8 bytes of SHA-256(namespace:job)."""
    digest = hashlib.sha256(f"costctl:{namespace}:{job}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PgAdvisoryLock:
    """Per-job PostgreSQL advisory locks on connections of ``engine``."""

    def __init__(self, engine: Engine, lease_s: float) -> None:
        self.engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self.lease_s = lease_s

    @contextmanager
    def hold(self, job: str) -> Iterator[bool]:
        """Try the lock once; yield whether it is held; release it on exit."""
        with self.engine.connect() as conn:
            idle = max(1, int(self.lease_s / 2))
            conn.execute(text(f"SET tcp_keepalives_idle = {idle}"))
            conn.execute(text(f"SET tcp_keepalives_interval = {max(1, idle // 2)}"))
            conn.execute(text("SET tcp_keepalives_count = 2"))
            schema = conn.execute(text("SELECT current_schema()")).scalar_one()
            key = _key(str(schema), job)
            got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())
            try:
                yield got
            finally:
                if got:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})


class FileLock:
    """Per-job ``flock`` files beside a SQLite database (or process-local when in memory)."""

    def __init__(self, database: str | None) -> None:
        self.base = None if not database or database == ":memory:" else Path(database)
        self._local: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    @contextmanager
    def hold(self, job: str) -> Iterator[bool]:
        """Try the lock once; yield whether it is held; release it on exit."""
        with self._guard:
            local = self._local.setdefault(job, threading.Lock())
        if not local.acquire(blocking=False):  # threads of this process share the flock
            yield False
            return
        try:
            if self.base is None:
                yield True
                return
            path = self.base.with_name(f"{self.base.name}.{job}.lock")
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    yield False
                    return
                try:
                    yield True
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
        finally:
            local.release()


def lock_for(engine: Engine, lease_s: float) -> PgAdvisoryLock | FileLock:
    """The job lock that fits the engine's backend."""
    if engine.dialect.name == "postgresql":
        return PgAdvisoryLock(engine, lease_s)
    return FileLock(engine.url.database)
