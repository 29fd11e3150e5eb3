"""Reservations, token buckets and change notices in Redis (several API workers, one truth).

Every check-and-update is one Lua script, which Redis runs atomically: no other command runs
between the check and the add, so concurrent workers cannot overshoot (the check-then-spend
race). The scripts mirror billing.enforcement.domain.budget_verdict and .take. Keys (single
Redis instance, prefix ``cc:enf:``): ``b:<budget id>`` counters {p period start ms, sm/st spent
micros/tokens, rm/rt reserved}, ``r:<key>`` a reservation {s status, b budget ids, m, t},
``exp`` a sorted set of held reservations by expiry, ``k:<bucket>`` a bucket {l level, t ms}.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import redis

from billing.enforcement.backend import Reserved
from billing.enforcement.domain import (
    ALLOW,
    BucketSpec,
    Budget,
    Charge,
    Decision,
    Level,
    SettleResult,
    decide_budgets,
    period_bounds,
)

log = logging.getLogger(__name__)

PREFIX = "cc:enf:"
DEDUPE_MS = 3_600_000  # a settled key is remembered 1 h against re-sent usage events

_COMMON = """
local P = KEYS[1]
local function unhold(rid, status, dedupe)
  local rk = P .. 'r:' .. rid
  local h = redis.call('HMGET', rk, 's', 'b', 'm', 't')
  if h[1] ~= 'held' then return 0 end
  for id in string.gmatch(h[2], '[^,]+') do
    local bk = P .. 'b:' .. id
    if redis.call('EXISTS', bk) == 1 then
      redis.call('HINCRBY', bk, 'rm', -tonumber(h[3]))
      redis.call('HINCRBY', bk, 'rt', -tonumber(h[4]))
    end
  end
  redis.call('HSET', rk, 's', status)
  redis.call('PEXPIRE', rk, dedupe)
  redis.call('ZREM', P .. 'exp', rid)
  return 1
end
local function roll(bk, ps)
  local p = tonumber(redis.call('HGET', bk, 'p') or '-1')
  if p < ps then
    redis.call('HSET', bk, 'p', ps, 'sm', 0, 'st', 0)
    redis.call('HSETNX', bk, 'rm', 0)
    redis.call('HSETNX', bk, 'rt', 0)
  end
end
"""

ADJUST = (
    _COMMON
    + """
local bk = P .. 'b:' .. ARGV[1]
roll(bk, tonumber(ARGV[2]))
redis.call('HINCRBY', bk, 'sm', ARGV[3])
redis.call('HINCRBY', bk, 'st', ARGV[4])
return 1
"""
)

RESERVE = (
    _COMMON
    + """
local now = tonumber(ARGV[1])
local rid, em, et = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local ttl, dedupe, n = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
for _, old in ipairs(redis.call('ZRANGEBYSCORE', P .. 'exp', '-inf', now, 'LIMIT', 0, 16)) do
  unhold(old, 'expired', dedupe)
end
local rk = P .. 'r:' .. rid
local s = redis.call('HGET', rk, 's')
if s then return {s == 'held' and 1 or 0, -1, 'duplicate'} end
local out = {1, 0, 'ok'}
local ids = {}
for i = 1, n do
  local a = 7 + (i - 1) * 4
  local id, ps = ARGV[a + 1], tonumber(ARGV[a + 2])
  local lm, lt = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  local bk = P .. 'b:' .. id
  roll(bk, ps)
  local v = redis.call('HMGET', bk, 'sm', 'st', 'rm', 'rt')
  local sm, st = tonumber(v[1] or 0), tonumber(v[2] or 0)
  local rm, rt = tonumber(v[3] or 0), tonumber(v[4] or 0)
  for _, x in ipairs({sm, st, rm, rt}) do table.insert(out, x) end
  local broken = nil
  if lm >= 0 and sm + rm + em > lm then broken = 'budget_usd'
  elseif lt >= 0 and st + rt + et > lt then broken = 'budget_tokens' end
  if broken then out[1] = 0; out[2] = i; out[3] = broken; return out end
  table.insert(ids, id)
end
for _, id in ipairs(ids) do
  local bk = P .. 'b:' .. id
  redis.call('HINCRBY', bk, 'rm', em)
  redis.call('HINCRBY', bk, 'rt', et)
end
redis.call('HSET', rk, 's', 'held', 'b', table.concat(ids, ','), 'm', em, 't', et)
redis.call('ZADD', P .. 'exp', now + ttl, rid)
return out
"""
)

RELEASE = (
    _COMMON
    + """
return unhold(ARGV[1], ARGV[2], tonumber(ARGV[3]))
"""
)

EXPIRE = (
    _COMMON
    + """
local n = 0
local due = redis.call('ZRANGEBYSCORE', P .. 'exp', '-inf', tonumber(ARGV[1]), 'LIMIT', 0, 1000)
for _, old in ipairs(due) do
  n = n + unhold(old, 'expired', tonumber(ARGV[2]))
end
return n
"""
)

SETTLE = (
    _COMMON
    + """
local rid, m, t, ts = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local dedupe, n = tonumber(ARGV[5]), tonumber(ARGV[6])
local given = {}
for i = 1, n do
  local id, ps = ARGV[6 + 2 * i - 1], tonumber(ARGV[6 + 2 * i])
  roll(P .. 'b:' .. id, ps)
  table.insert(given, id)
end
local function spend(id)
  local bk = P .. 'b:' .. id
  if redis.call('EXISTS', bk) == 0 then return end
  if ts >= tonumber(redis.call('HGET', bk, 'p') or '0') then
    redis.call('HINCRBY', bk, 'sm', m)
    redis.call('HINCRBY', bk, 'st', t)
  end
end
local rk = P .. 'r:' .. rid
local h = redis.call('HMGET', rk, 's', 'b')
if h[1] == 'held' or h[1] == 'expired' then
  unhold(rid, 'reconciled', dedupe)
  for id in string.gmatch(h[2], '[^,]+') do spend(id) end
  redis.call('HSET', rk, 's', 'reconciled')
  redis.call('PEXPIRE', rk, dedupe)
  return {1, h[2]}
elseif h[1] then
  return {2, ''}
end
if n == 0 then return {0, ''} end
for _, id in ipairs(given) do spend(id) end
redis.call('HSET', rk, 's', 'charged', 'b', table.concat(given, ','))
redis.call('PEXPIRE', rk, dedupe)
return {3, table.concat(given, ',')}
"""
)

TAKE = """
local P = KEYS[1]
local now, reserve, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local after = {}
for i = 1, n do
  local a = 3 + (i - 1) * 5
  local key, cap, rate = ARGV[a + 1], tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local cost, use = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
  local h = redis.call('HMGET', P .. 'k:' .. key, 'l', 't')
  local level = cap
  if h[1] then level = math.min(cap, tonumber(h[1]) + math.max(now - tonumber(h[2]), 0) * rate) end
  local need = cost + use * reserve * cap
  if level < need then
    if need > cap or rate <= 0 then return {0, i, '-1'} end
    return {0, i, tostring((need - level) / rate)}
  end
  after[i] = {key, level - cost, cap / rate}
end
for _, b in ipairs(after) do
  redis.call('HSET', P .. 'k:' .. b[1], 'l', tostring(b[2]), 't', now)
  redis.call('PEXPIRE', P .. 'k:' .. b[1], math.ceil(b[3] * 2) + 1000)
end
return {1, 0, '0'}
"""


def ms(ts: datetime) -> int:
    """Epoch milliseconds."""
    return int(ts.timestamp() * 1000)


def client(url: str) -> redis.Redis[bytes]:
    """A Redis client with short timeouts (the hot path must not hang)."""
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def _level(values: Sequence[Any]) -> Level:
    return Level(*(int(float(v or 0)) for v in values))


class RedisReservations:
    """ReservationBackend in Redis (Lua)."""

    name = "redis"

    def __init__(self, url: str, *, prefix: str = PREFIX) -> None:
        self.r = client(url)
        self.prefix = prefix
        self._reserve = self.r.register_script(RESERVE)
        self._release = self.r.register_script(RELEASE)
        self._expire = self.r.register_script(EXPIRE)
        self._settle = self.r.register_script(SETTLE)
        self._adjust = self.r.register_script(ADJUST)

    def reserve(
        self,
        key: str,
        budgets: Sequence[Budget],
        *,
        customer: str,
        model: str,
        request_type: str,
        est_micros: int,
        est_tokens: int,
        now: datetime,
        ttl_s: float,
    ) -> Reserved:
        """See ReservationBackend.reserve (one Lua call)."""
        args: list[Any] = [ms(now), key, est_micros, est_tokens, int(ttl_s * 1000), DEDUPE_MS]
        args.append(len(budgets))
        for b in budgets:
            lm = -1 if b.limit_micros is None else b.limit_micros
            lt = -1 if b.limit_tokens is None else b.limit_tokens
            args += [b.id, ms(period_bounds(b.period, now)[0]), lm, lt]
        out = self._reserve(keys=[self.prefix], args=args)
        ok, idx, reason = int(out[0]), int(out[1]), out[2].decode()
        if idx == -1:
            d = ALLOW if ok else Decision(False, "reservation_settled", detail=key)
            return Reserved(d, (), duplicate=True)
        flat = [int(x) for x in out[3:]]
        levels = tuple(
            (b, Level(*flat[4 * i : 4 * i + 4])) for i, b in enumerate(budgets) if 4 * i < len(flat)
        )
        if ok:
            return Reserved(ALLOW, levels)
        # the Python rule names the action and retry time from the same levels
        decision = decide_budgets(levels, est_micros, est_tokens, now)
        if decision.allowed:  # cannot happen unless the two rules disagree
            raise RuntimeError(f"Lua refused ({reason}) what budget_verdict admits")
        return Reserved(decision, levels)

    def release(self, key: str, now: datetime) -> bool:
        """See ReservationBackend.release."""
        return bool(self._release(keys=[self.prefix], args=[key, "released", DEDUPE_MS]))

    def expire(self, now: datetime) -> int:
        """See ReservationBackend.expire."""
        return int(self._expire(keys=[self.prefix], args=[ms(now), DEDUPE_MS]))

    def settle(
        self, charges: Sequence[Charge], budgets: Sequence[Budget], now: datetime
    ) -> SettleResult:
        """See ReservationBackend.settle (one pipelined Lua call per event)."""
        pipe = self.r.pipeline(transaction=False)
        for ch in charges:
            match = [b for b in budgets if b.scope.matches(ch.customer, ch.model, ch.request_type)]
            args: list[Any] = [ch.key, ch.micros, ch.tokens, ms(ch.ts), DEDUPE_MS, len(match)]
            for b in match:
                args += [b.id, ms(period_bounds(b.period, now)[0])]
            self._settle(keys=[self.prefix], args=args, client=pipe)
        counts = [0, 0, 0, 0]
        touched: set[int] = set()
        for code, ids in pipe.execute():
            counts[int(code)] += 1
            touched.update(int(x) for x in ids.decode().split(",") if x)
        return SettleResult(counts[1], counts[3], counts[2], frozenset(touched))

    def levels(self, budgets: Sequence[Budget], now: datetime) -> dict[int, Level]:
        """See ReservationBackend.levels."""
        pipe = self.r.pipeline(transaction=False)
        for b in budgets:
            pipe.hmget(f"{self.prefix}b:{b.id}", "p", "sm", "st", "rm", "rt")
        out = {}
        for b, v in zip(budgets, pipe.execute(), strict=True):
            lv = _level(v[1:])
            if v[0] is None or int(v[0]) < ms(period_bounds(b.period, now)[0]):
                lv = Level(0, 0, lv.reserved_micros, lv.reserved_tokens)
            out[b.id] = lv
        return out

    def adjust(self, budget: Budget, micros: int, tokens: int, now: datetime) -> None:
        """See ReservationBackend.adjust (one Lua call: roll the period, then add)."""
        ps = ms(period_bounds(budget.period, now)[0])
        self._adjust(keys=[self.prefix], args=[budget.id, ps, micros, tokens])

    def in_flight(self) -> int:
        """See ReservationBackend.in_flight."""
        return int(self.r.zcard(f"{self.prefix}exp"))

    def forget(self, budget_id: int) -> None:
        """See ReservationBackend.forget."""
        self.r.delete(f"{self.prefix}b:{budget_id}")


class RedisBuckets:
    """BucketBackend in Redis: one Lua call draws from all buckets or none."""

    name = "redis"

    def __init__(self, url: str, *, prefix: str = PREFIX) -> None:
        self.r = client(url)
        self.prefix = prefix
        self._take = self.r.register_script(TAKE)

    def take(
        self, specs: Sequence[BucketSpec], reserve: float, now: datetime
    ) -> tuple[bool, BucketSpec | None, float | None]:
        """See BucketBackend.take. Rates are per millisecond inside the script."""
        if not specs:
            return True, None, None
        args: list[Any] = [ms(now), reserve, len(specs)]
        for s in specs:
            use = 1 if s.reason.startswith("rate_limited") else 0
            args += [s.key, s.capacity, s.rate_per_s / 1000, s.cost, use]
        ok, idx, retry = self._take(keys=[self.prefix], args=args)
        if int(ok):
            return True, None, None
        retry_ms = float(retry)
        return False, specs[int(idx) - 1], None if retry_ms < 0 else retry_ms / 1000

    def levels(self, keys: Sequence[str], now: datetime) -> dict[str, float]:
        """Levels as last stored (refill not applied)."""
        pipe = self.r.pipeline(transaction=False)
        for k in keys:
            pipe.hget(f"{self.prefix}k:{k}", "l")
        return {k: float(v) for k, v in zip(keys, pipe.execute(), strict=True) if v is not None}


class RedisPublisher:
    """Publisher over Redis pub/sub."""

    def __init__(self, url: str, channel: str) -> None:
        self.r = client(url)
        self.channel = channel

    def publish(self, what: str) -> None:
        """Best effort: a failed publish is logged; workers still poll the database."""
        try:
            self.r.publish(self.channel, what)
        except redis.RedisError:
            log.warning(
                "could not publish %r on %s; workers will see it by polling", what, self.channel
            )


class Listener:
    """A daemon thread: calls ``on_change`` on every notice and at least every ``poll_s``."""

    def __init__(
        self, url: str | None, channel: str, on_change: Callable[[], None], poll_s: float
    ) -> None:
        self.url, self.channel, self.on_change, self.poll_s = url, channel, on_change, poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="enforcement-listener", daemon=True)

    def start(self) -> None:
        """Start listening."""
        self._thread.start()

    def stop(self) -> None:
        """Stop and wait a moment for the thread."""
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        tick = min(self.poll_s, 0.25)  # how soon stop() is noticed
        while not self._stop.is_set():
            if self.url is None:
                self._safe()
                self._stop.wait(self.poll_s)
                continue
            try:
                pubsub = client(self.url).pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self.channel)
                self._safe()  # anything missed while (re)connecting
                last = time.monotonic()
                while not self._stop.is_set():
                    notice = pubsub.get_message(timeout=tick)
                    if notice is not None or time.monotonic() - last >= self.poll_s:
                        self._safe()
                        last = time.monotonic()
                pubsub.close()
            except redis.RedisError:
                log.warning("pub/sub on %s lost; polling until it is back", self.channel)
                self._safe()
                self._stop.wait(self.poll_s)

    def _safe(self) -> None:
        try:
            self.on_change()
        except Exception:
            log.exception("refreshing the enforcement policy failed")


def utc_ms(value: int) -> datetime:
    """Epoch milliseconds as an aware datetime."""
    return datetime.fromtimestamp(value / 1000, UTC)
