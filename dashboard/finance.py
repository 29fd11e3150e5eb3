"""Finance-ready table output: fixed decimals per column, never e-notation, never "None".

``decimals`` decides a column's places from its name (USD 2, unit costs per 1M tokens 4,
percentages 2, ratios 4, GPU-hours 3, other floats 4, integers 0); ``text_frame`` renders a
table as text for CSV and HTML; ``write_xlsx`` writes real numbers with the same places as
Excel number formats, column widths, a bold frozen header row, one sheet per table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from openpyxl import Workbook
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter


def decimals(column: str, series: pd.Series) -> int | None:
    """Decimal places of a numeric column (None: not numeric, written as text)."""
    if pd.api.types.is_bool_dtype(series) or not pd.api.types.is_numeric_dtype(series):
        return None
    name = column.lower()
    if pd.api.types.is_integer_dtype(series) or name in {"requests", "tokens", "consumedquantity"}:
        return 0
    if "per_1m" in name or "per1m" in name:
        return 4
    if name.endswith("_pct") or name.endswith("pct"):
        return 2
    if name == "ratio":
        return 4
    if "gpu_hours" in name or "gpuhours" in name:
        return 3
    if name.endswith("_usd") or name.endswith("cost") or (name.startswith("x_") and "usd" in name):
        return 2
    return 4


def _cell(value: Any, places: int | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if value is pd.NA or value is pd.NaT:
        return ""
    if places is None:
        return str(value)
    return f"{float(value):.{places}f}"


def text_frame(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` as strings: numbers at fixed places, missing values empty."""
    out = pd.DataFrame(index=df.index)
    for c in df.columns:
        places = decimals(str(c), df[c])
        out[c] = [_cell(v, places) for v in df[c].tolist()]
    return out


def write_csv(df: pd.DataFrame, path: Path) -> None:
    """One table as CSV with fixed decimals."""
    text_frame(df).to_csv(path, index=False)


def _number_format(places: int | None) -> str:
    if places is None:
        return "@"
    return "#,##0" if places == 0 else "#,##0." + "0" * places


def write_xlsx(tables: Mapping[str, pd.DataFrame], path: Path) -> None:
    """One sheet per table: numbers with formats, widths to fit, a bold frozen header."""
    wb = Workbook()
    wb.remove(wb.active)  # type: ignore[arg-type]
    for name, df in tables.items():
        ws = wb.create_sheet(title=name[:31])
        ws.append([str(c) for c in df.columns])
        for cell in ws[1]:
            cell.font = Font(bold=True)
        ws.freeze_panes = "A2"
        places = [decimals(str(c), df[c]) for c in df.columns]
        for row in df.itertuples(index=False):
            ws.append(
                [
                    None if _cell(v, p) == "" else (float(v) if p else int(v) if p == 0 else str(v))
                    for v, p in zip(row, places, strict=True)
                ]
            )
        text = text_frame(df)
        for i, c in enumerate(df.columns, start=1):
            letter = get_column_letter(i)
            width = max([len(str(c)), *(len(v) + v.count(".") for v in text[c])], default=8)
            ws.column_dimensions[letter].width = min(60, width + 3)
            for cell in ws[letter][1:]:
                cell.number_format = _number_format(places[i - 1])
    wb.save(path)


# FOCUS (FinOps Open Cost and Usage Specification) names for the review's cost tables. A
# column with a FOCUS meaning takes the FOCUS name; the rest keep their costctl name behind
# FOCUS's custom-column prefix ``x_``. BilledCost = EffectiveCost: costctl applies no
# commitment discounts of its own (the price book rate is what was charged). The customer's
# price (rate card) and the margin are costctl's own: x_PriceUsd, x_MarginUsd (FOCUS ListCost
# is the provider's list price of the resources, not what costctl's customers are charged).
FOCUS_RENAME = {
    "model": "ResourceId",
    "cost_usd": "BilledCost",
    "tokens": "ConsumedQuantity",
}
FOCUS_TABLES = ("lines", "idle")
SERVICE_NAME = "costctl GPU inference"


def focus_table(df: pd.DataFrame, start: str, end: str) -> pd.DataFrame:
    """A cost table with FOCUS column names and context columns (ChargePeriodStart/End,
    BillingCurrency, ChargeCategory, ServiceName, EffectiveCost, ConsumedUnit)."""
    out = df.rename(
        columns={
            c: FOCUS_RENAME.get(str(c), f"x_{''.join(w.title() for w in str(c).split('_'))}")
            for c in df.columns
        }
    )
    n = len(out)
    context = {
        "ChargePeriodStart": [start] * n,
        "ChargePeriodEnd": [end] * n,
        "ChargeCategory": ["Usage"] * n,
        "ServiceName": [SERVICE_NAME] * n,
        "BillingCurrency": ["USD"] * n,
    }
    out.insert(0, "ChargePeriodEnd", context["ChargePeriodEnd"])
    out.insert(0, "ChargePeriodStart", context["ChargePeriodStart"])
    for k in ("ChargeCategory", "ServiceName", "BillingCurrency"):
        out[k] = context[k]
    if "BilledCost" in out.columns:
        out["EffectiveCost"] = out["BilledCost"]
    if "ConsumedQuantity" in out.columns:
        out["ConsumedUnit"] = ["Tokens"] * n
    return out
