"""Schemathesis over the whole API, in-process (ASGI), with admin, ingest and read keys on both
backends: no 5xx and no response that breaks the OpenAPI document. Bounded: MAX_EXAMPLES
generated cases (valid and invalid) per operation and role, no shrinking."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance
from sqlalchemy.engine import Engine

from costctl.apiapp import build_api
from costctl.settings import Settings
from tests.utils.api import make_keys

MAX_EXAMPLES = 25
ROLES = ("admin", "ingest", "read", "acme")  # acme: a read key scoped to one customer


def _run(op: Any, headers: dict[str, str], failures: list[str], seen: Counter[int]) -> None:
    strategy = st.one_of(
        op.as_strategy(GenerationMode.POSITIVE), op.as_strategy(GenerationMode.NEGATIVE)
    )

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def check(case: Any) -> None:
        try:
            response = case.call_and_validate(
                headers=headers, checks=[not_a_server_error, response_schema_conformance]
            )
            seen[response.status_code] += 1
        except Exception as exc:  # collect every failing operation, then assert
            failures.append(f"{op.label}: {type(exc).__name__}: {str(exc)[:400]}")

    check()


@pytest.mark.slow
def test_schemathesis_finds_no_5xx_and_no_schema_violation(engine: Engine) -> None:
    app = build_api(Settings(), engine, clock=lambda: datetime.now(UTC), specs=[], listen=False)
    keys = make_keys(engine)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    seen: Counter[int] = Counter()
    ops = [r.ok() for r in schema.get_all_operations()]
    assert len(ops) >= 20
    for role in ROLES:
        for op in ops:
            _run(op, {"Authorization": f"Bearer {keys[role]}"}, failures, seen)
    assert failures == [], "\n".join(failures[:20])
    # the run reached the routes: successes, refusals by role and invalid inputs all seen
    assert seen[200] > 0 and seen[403] > 0 and seen[422] > 0, seen
    assert not [code for code in seen if code >= 500], seen
