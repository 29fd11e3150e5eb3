"""Budget alerts: once per budget, period and level, to the log and a webhook.

Details: the (budget, period start, level) row is inserted first with a unique key, so with
several workers and the job racing exactly one of them sends the alert.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

import httpx
from sqlalchemy import insert
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from billing.enforcement.config import EnforcementConfig
from billing.enforcement.domain import Budget, Level, burn_ratio, period_bounds
from billing.enforcement.models import MICROS, BudgetAlertRow
from billing.models import table_of

log = logging.getLogger(__name__)
ALERT = table_of(BudgetAlertRow)


def alert_level(budget: Budget, level: Level) -> str | None:
    """'hard' at or past the limit, 'soft' past soft_ratio of it, else None (spent only)."""
    spent = Level(level.spent_micros, level.spent_tokens)
    ratio = burn_ratio(budget, spent)
    if ratio >= 1:
        return "hard"
    if ratio >= budget.soft_ratio:
        return "soft"
    return None


def due_alerts(pairs: Iterable[tuple[Budget, Level]]) -> list[tuple[Budget, Level, str]]:
    """Every (budget, level, alert level) whose spend crossed a line (pure)."""
    out = []
    for b, lv in pairs:
        lvl = alert_level(b, lv)
        if lvl == "hard":
            out += [(b, lv, "soft"), (b, lv, "hard")]
        elif lvl == "soft":
            out.append((b, lv, "soft"))
    return out


def raise_alerts(
    engine: Engine,
    config: EnforcementConfig,
    pairs: Iterable[tuple[Budget, Level]],
    now: datetime,
    *,
    http: httpx.Client | None = None,
) -> list[dict[str, object]]:
    """Send the alerts not sent yet this period; returns the payloads sent."""
    sent = []
    for b, lv, level in due_alerts(pairs):
        start, end = period_bounds(b.period, now)
        try:
            with engine.begin() as conn:
                conn.execute(
                    insert(ALERT).values(
                        budget_id=b.id,
                        period_start=start,
                        level=level,
                        ts=now,
                        spent_micros=lv.spent_micros,
                    )
                )
        except IntegrityError:
            continue  # someone sent it already
        payload: dict[str, object] = {
            "kind": "budget_alert",
            "level": level,
            "budget": b.name,
            "scope": b.scope.label(),
            "period": b.period.value,
            "period_start": start.isoformat(),
            "period_end": end.isoformat(),
            "spent_usd": lv.spent_micros / MICROS,
            "spent_tokens": lv.spent_tokens,
            "limit_usd": None if b.limit_micros is None else b.limit_micros / MICROS,
            "limit_tokens": b.limit_tokens,
            "action": b.action.value,
            "at": now.isoformat(),
        }
        log.warning("budget %s crossed its %s line: %s", b.name, level, payload)
        if config.alert_webhook_url is not None:
            _post(str(config.alert_webhook_url), payload, config.alert_timeout_s, http)
        sent.append(payload)
    return sent


def _post(url: str, payload: dict[str, object], timeout: float, http: httpx.Client | None) -> None:
    try:
        if http is not None:
            http.post(url, json=payload, timeout=timeout).raise_for_status()
        else:
            httpx.post(url, json=payload, timeout=timeout).raise_for_status()
    except httpx.HTTPError as exc:
        log.error("budget alert webhook %s failed: %s", url, exc)
