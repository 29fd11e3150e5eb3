"""Enforcement: budgets with reservations, rate limits with load shedding, kill-switches.

Interfaces other packages use (imported lazily, so ``billing.config`` can import the config):

- ``extension`` / ``make_extension(scaler=, clock=, listen=)``: plug into ``create_app``.
- ``routers``: the APIRouters, if you mount them yourself.
- ``budget_job(enforcer, config) -> JobSpec``: the budget evaluation for `costctl worker`.
- ``budget_burn(engine, enforcement_config, now) -> list[BudgetBurn]`` for the dashboard.
- ``DeploymentScaler``: the protocol the scheduler's Kubernetes applier implements.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from billing.enforcement import models as models  # registers the tables

if TYPE_CHECKING:
    from billing.enforcement.api import extension, make_extension, routers
    from billing.enforcement.backend import DeploymentScaler
    from billing.enforcement.burn import BudgetBurn, budget_burn
    from billing.enforcement.jobs import budget_job
    from billing.enforcement.service import Enforcer

_LAZY = {
    "extension": "billing.enforcement.api",
    "make_extension": "billing.enforcement.api",
    "routers": "billing.enforcement.api",
    "DeploymentScaler": "billing.enforcement.backend",
    "BudgetBurn": "billing.enforcement.burn",
    "budget_burn": "billing.enforcement.burn",
    "budget_job": "billing.enforcement.jobs",
    "Enforcer": "billing.enforcement.service",
}

__all__ = [
    "BudgetBurn",
    "DeploymentScaler",
    "Enforcer",
    "budget_burn",
    "budget_job",
    "extension",
    "make_extension",
    "models",
    "routers",
]


def __getattr__(name: str) -> Any:
    """Import the public names on first use."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)
