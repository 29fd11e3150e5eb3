"""One limit per field: no API schema accepts a string longer than the column it is stored in."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter
from sqlmodel import SQLModel

from billing.api.routes.keys import KeyCreate
from billing.enforcement.models import BudgetRow, KillSwitchRow, RateLimitRow, ReservationRow
from billing.enforcement.schemas import AuthorizeIn, BudgetCreate, KillIn, RateLimitCreate
from billing.models import Allocation, ApiKey, GpuProcessSample, GpuSample, UsageEvent, table_of
from billing.schemas import USAGE_EVENT, AllocationIn, GpuProcessSampleIn, GpuSampleIn

# table -> (API input schemas that write it, {column: API field} where the names differ)
WRITERS: dict[type[SQLModel], tuple[list[Any], dict[str, str]]] = {
    UsageEvent: ([USAGE_EVENT], {"event_id": "id"}),
    GpuSample: ([GpuSampleIn], {}),
    GpuProcessSample: ([GpuProcessSampleIn], {}),
    Allocation: ([AllocationIn], {}),
    ApiKey: ([KeyCreate], {}),
    BudgetRow: ([BudgetCreate], {}),
    RateLimitRow: ([RateLimitCreate], {}),
    ReservationRow: ([AuthorizeIn], {"key": "request_id"}),
    KillSwitchRow: ([KillIn], {}),
}


def _max_lengths(schema: Any) -> dict[str, int]:
    js = (schema if isinstance(schema, TypeAdapter) else TypeAdapter(schema)).json_schema()
    out: dict[str, int] = {}
    for name, prop in js.get("properties", {}).items():
        for alt in [prop, *prop.get("anyOf", [])]:
            if "maxLength" in alt:
                out[name] = alt["maxLength"]
    return out


@pytest.mark.parametrize("model", list(WRITERS), ids=lambda m: table_of(m).name)
def test_api_max_length_never_exceeds_the_column(model: type[SQLModel]) -> None:
    schemas, renames = WRITERS[model]
    checked = 0
    for col in table_of(model).columns:
        length = getattr(col.type, "length", None)
        if length is None:
            continue
        api_field = renames.get(col.name, col.name)
        for schema in schemas:
            limit = _max_lengths(schema).get(api_field)
            if limit is not None:
                checked += 1
                assert limit <= length, (table_of(model).name, col.name, limit)
    assert checked > 0


def test_every_string_field_of_an_input_schema_has_a_limit() -> None:
    for schema in [USAGE_EVENT, GpuSampleIn, GpuProcessSampleIn, AllocationIn, KeyCreate]:
        js = (schema if isinstance(schema, TypeAdapter) else TypeAdapter(schema)).json_schema()
        for name, prop in js["properties"].items():
            alts = [prop, *prop.get("anyOf", [])]
            free = [a for a in alts if a.get("type") == "string" and "format" not in a]
            if any("enum" not in a for a in free):
                assert name in _max_lengths(schema), name
