"""The budget job (run by `costctl worker`): expire reservations, charge missed usage, alert, kill.

Every ``evaluate_interval_s`` it (1) releases reservations past their expiry, (2) settles usage
events the ingest hook did not see (e.g. loaded straight into the database) through the same
idempotent ``settle``, (3) raises soft/hard alerts and (4) trips the kill-switch of 'kill'
budgets whose spend reached the hard limit. Before alerting it reconciles the counters of
'cost' budgets to ``period_spent`` (the ledger of the hours the rollup computed + the tail at
the measured rate: a rollup replaces estimated tail cost by ledger cost) and reports each
correction (``JobReport.corrections``, µUSD per budget, logged). It reports counter drift of
'price' budgets against the usage truth.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select

from billing.config import BillingConfig
from billing.enforcement.burn import budget_burn
from billing.enforcement.domain import Level, kill_target
from billing.enforcement.enums import Basis
from billing.enforcement.killswitch import kill
from billing.enforcement.models import BudgetAction
from billing.enforcement.service import Enforcer
from billing.enforcement.sql_backend import utc
from billing.models import UsageEvent, table_of
from billing.runner.runner import JobSpec
from billing.runner.schedule import Every

log = logging.getLogger(__name__)
SWEEP_BATCH = 5_000


@dataclass
class JobReport:
    """What one run did."""

    expired: int = 0
    swept: int = 0
    charged: int = 0
    alerts: int = 0
    killed: list[str] = field(default_factory=list)
    max_drift_micros: int = 0
    corrections: dict[str, int] = field(default_factory=dict)


@dataclass
class Sweeper:
    """Settles usage events from a time watermark, re-reading ``overlap_s`` before it.

    Late events (``ts`` older than the overlap when they arrive) are left to the ingest hook.
    Settling is idempotent per event id, so the overlap never counts an event twice.
    """

    overlap_s: float = 600.0
    watermark: datetime | None = None
    max_per_run: int = 200_000
    # budgets whose counters differed from the usage truth on the previous run
    drifting: set[int] = field(default_factory=set)

    def run(self, enf: Enforcer, now: datetime) -> tuple[int, int]:
        """(events looked at, events newly charged or reconciled)."""
        u = table_of(UsageEvent).c
        since = (self.watermark or now) - timedelta(seconds=self.overlap_s)
        stmt = (
            select(
                u.event_id,
                u.ts,
                u.model,
                u.customer,
                u.request_type,
                u.input_tokens,
                u.output_tokens,
            )
            .where(u.ts >= since, u.ts <= now)
            .limit(self.max_per_run)
        )
        with enf.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        policy = enf.policy()
        done = 0
        for i in range(0, len(rows), SWEEP_BATCH):
            chunk = rows[i : i + SWEEP_BATCH]
            used = [
                (
                    r.event_id,
                    r.customer,
                    r.model,
                    r.request_type,
                    r.input_tokens,
                    r.output_tokens,
                    utc(r.ts),
                )
                for r in chunk
            ]
            res = enf.settle(used, policy.budgets, now)
            done += res.charged + res.reconciled
        self.watermark = now
        return len(rows), done


def evaluate_budgets(
    enf: Enforcer, now: datetime, sweeper: Sweeper | None = None, *, resolution_s: int = 3600
) -> JobReport:
    """One run of the budget job (see the module docstring)."""
    report = JobReport(expired=enf.reservations.expire(now))
    if sweeper is not None:
        report.swept, report.charged = sweeper.run(enf, now)
    policy = enf.refresh()
    rates = enf.rates(now, fresh=True)
    cost = [b for b in policy.budgets if b.basis == Basis.cost]
    report.corrections = enf.seed(cost, now, resolution_s=resolution_s)
    if report.corrections:
        log.info("budget counters reconciled to the ledger (µUSD): %s", report.corrections)
    report.alerts = len(enf.evaluate(policy.budgets, now)) if policy.budgets else 0
    levels = enf.reservations.levels(policy.budgets, now)
    drifting: dict[int, str] = {}
    for burn in budget_burn(
        enf.engine,
        enf.config,
        now,
        reservations=enf.reservations,
        budgets=policy.budgets,
        rates=rates,
        resolution_s=resolution_s,
    ):
        report.max_drift_micros = max(report.max_drift_micros, abs(burn.drift_micros))
        if burn.drift_micros and burn.budget.id is not None:
            drifting[burn.budget.id] = burn.budget.name
        b = burn.budget
        lv = levels.get(b.id, Level())
        if b.action != BudgetAction.kill:
            continue
        over = (b.limit_micros is not None and lv.spent_micros >= b.limit_micros) or (
            b.limit_tokens is not None and lv.spent_tokens >= b.limit_tokens
        )
        target = kill_target(b)
        if over and target not in policy.kills:
            kill(
                enf.engine,
                scope=target[0],
                target=target[1],
                reason=f"budget {b.name} reached its hard limit",
                actor=f"budget:{b.name}",
                now=now,
                publisher=enf.publisher,
                scaler=enf.scaler,
            )
            report.killed.append(f"{target[0].value}:{target[1]}")
    if report.killed:
        enf.refresh()
    # While usage streams in, a batch committed but not yet settled by the ingest hook shows as
    # a moment's drift; only drift that outlives a whole run (the sweeper settles missed
    # events) is worth a warning.
    persistent = sorted(n for i, n in drifting.items() if sweeper is None or i in sweeper.drifting)
    if sweeper is not None:
        sweeper.drifting = set(drifting)
    if persistent:
        log.warning(
            "budget counters drift from usage by up to %d µUSD (budgets: %s)",
            report.max_drift_micros,
            ", ".join(persistent),
        )
    elif drifting:
        log.debug("transient counter drift (in-flight settles): %d µUSD", report.max_drift_micros)
    return report


def budget_job(enforcer: Callable[[], Enforcer], config: BillingConfig) -> JobSpec:
    """The budget evaluation as a worker job, every ``config.enforcement.evaluate_interval_s``.

    ``enforcer`` is called at each run (the composition root builds it once, lazily, so a
    process that only lists the jobs never connects to Redis).

    The sweeper's watermark lives in this process: a worker that takes the job over starts
    from the overlap window again, which is safe (settling is idempotent per event).
    """
    sweeper = Sweeper()
    return JobSpec(
        "billing.enforcement.budgets",
        Every(config.enforcement.evaluate_interval_s),
        lambda now: evaluate_budgets(
            enforcer(), now, sweeper, resolution_s=config.ledger_resolution_s
        ),
    )
