"""Kill-switch edge: trip and revive a scope, scale a model's Deployment, tell every worker.

Order on kill: DB row (the source of truth, audited) -> publish (workers deny at once) ->
scale the model to zero, remembering the replica count. Revive reverses it. A scaler failure is
audited and reported, never hides the kill: denying traffic matters more than the scale-down.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.engine import Engine

from billing.enforcement.backend import DeploymentScaler, Publisher
from billing.enforcement.models import KillScope
from billing.enforcement.schemas import KillSwitchPublic
from billing.enforcement.store import audit_note, deactivate_kill, insert_kill, note_replicas

log = logging.getLogger(__name__)

CHANNEL = "costctl:enforcement"


@dataclass(frozen=True)
class KillOutcome:
    """What a kill or revive did."""

    switch: KillSwitchPublic | None
    changed: bool
    replicas: int | None = None  # replicas before (kill) or restored to (revive)
    scale_error: str | None = None


def kill(
    engine: Engine,
    *,
    scope: KillScope,
    target: str,
    reason: str,
    actor: str,
    now: datetime,
    publisher: Publisher | None = None,
    scaler: DeploymentScaler | None = None,
) -> KillOutcome:
    """Trip a kill-switch (idempotent: an active one is left as is)."""
    switch, created = insert_kill(
        engine, scope=scope, target=target, reason=reason, actor=actor, now=now
    )
    if not created:
        return KillOutcome(switch, False, switch.previous_replicas)
    if publisher is not None:
        publisher.publish("kill")
    if scope != KillScope.model or scaler is None:
        return KillOutcome(switch, True)
    try:
        previous = scaler.scale_model(target, 0)
    except Exception as exc:
        log.exception("kill %s: scaling the Deployment to 0 failed", target)
        audit_note(
            engine,
            actor=actor,
            action="scale.failed",
            subject=f"model:{target}",
            now=now,
            error=str(exc)[:500],
        )
        return KillOutcome(switch, True, None, str(exc))
    note_replicas(engine, kill_id=switch.id, previous=previous, actor=actor, now=now)
    return KillOutcome(switch.model_copy(update={"previous_replicas": previous}), True, previous)


def revive(
    engine: Engine,
    *,
    scope: KillScope,
    target: str,
    reason: str,
    actor: str,
    now: datetime,
    publisher: Publisher | None = None,
    scaler: DeploymentScaler | None = None,
) -> KillOutcome:
    """Revive a scope; a model gets back the replicas it had when it was killed."""
    switch = deactivate_kill(
        engine, scope=scope, target=target, reason=reason, actor=actor, now=now
    )
    if switch is None:
        return KillOutcome(None, False)
    if publisher is not None:
        publisher.publish("revive")
    restore = switch.previous_replicas
    if scope != KillScope.model or scaler is None or restore is None:
        return KillOutcome(switch, True)
    try:
        scaler.scale_model(target, restore)
    except Exception as exc:
        log.exception("revive %s: restoring %d replicas failed", target, restore)
        audit_note(
            engine,
            actor=actor,
            action="scale.failed",
            subject=f"model:{target}",
            now=now,
            error=str(exc)[:500],
            replicas=restore,
        )
        return KillOutcome(switch, True, None, str(exc))
    audit_note(
        engine, actor=actor, action="scale", subject=f"model:{target}", now=now, replicas=restore
    )
    return KillOutcome(switch, True, restore)
