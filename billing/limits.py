"""One limit per field, used by the API schemas and the table columns alike.

A string column's ``max_length`` and the API's ``max_length`` for the same field are these
constants, so the API refuses (422) what the table could not store (tests/billing/
test_limits.py walks every column). Integers are bounded by their column's SQL type.
"""

from __future__ import annotations

from datetime import UTC, datetime

NAME_LEN = 200  # model, customer, node, GPU/MIG UUIDs, event ids and sources, key names
REQUEST_TYPE_LEN = 100
K8S_NAME_LEN = 253  # namespace, pod, container (DNS subdomain)
POD_UID_LEN = 64
GPU_TYPE_LEN = 64
PRICING_CLASS_LEN = 32
MIG_PROFILE_LEN = 32
FAULT_LEN = 200
STATUS_LEN = 20
SHORT_ENUM_LEN = 16  # allocation mode and source, ledger kind, key role
PLAN_ID_LEN = 64
OBSERVER_LEN = 200
KEY_PREFIX_LEN = 16
KEY_HASH_LEN = 64
OBJ_NAME_LEN = 100  # budget and rate-limit names
REASON_LEN = 1000

INT32_MAX = 2**31 - 1  # an INTEGER column on PostgreSQL
INT64_MAX = 2**63 - 1  # a BIGINT column (and SQLite's INTEGER)

# Aware datetimes are kept this far inside year 1 .. 9999 so converting any UTC offset to UTC
# cannot overflow.
MIN_TIME = datetime(1, 1, 2, tzinfo=UTC)
MAX_TIME = datetime(9999, 12, 30, tzinfo=UTC)
