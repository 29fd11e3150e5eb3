"""Server-side apply for the fake API server: field sets per manager, apply, update, dry run.

What it does, as the real API server does (structured-merge-diff):
- every write records which manager owns which fields (``metadata.managedFields``, FieldsV1);
- an apply (``PATCH application/apply-patch+yaml``, ``fieldManager`` required) merges the
  applied configuration: maps merge, associative lists (``containers``, ``env``, ``ports``,
  ``volumes``, ``volumeMounts``, ``initContainers``, keyed by ``name``) merge by key, all
  other lists are atomic (replaced whole);
- a field the manager applied before, omits now, and no other manager owns is removed (an
  emptied list item or map along that path goes with it);
- a field another manager owns with a different value is a conflict: 409 naming the fields,
  unless ``force=true``, which takes the field over;
- any other write (create, update, merge/strategic patch, scale) gives its manager the fields
  it changed and takes them from the others.

Where it differs from a real API server: the associative-list keys are the fixed set above
(a real server reads them per type from the OpenAPI schema, e.g. ``ports`` keys on
``containerPort``+``protocol``); lists of scalars marked ``set`` are treated as atomic; a scale
update is owned by its manager like a main-resource update (a real server records it with
``subresource: scale``).
"""

from __future__ import annotations

import copy
import json
from typing import Any

Path = tuple[str, ...]
ASSOCIATIVE = {"containers", "initContainers", "env", "ports", "volumes", "volumeMounts"}
UNTRACKED = {
    ("metadata", "name"),
    ("metadata", "namespace"),
    ("metadata", "uid"),
    ("metadata", "resourceVersion"),
    ("metadata", "generation"),
    ("metadata", "creationTimestamp"),
    ("metadata", "managedFields"),
}


class Conflict(ValueError):
    """Apply conflicts with fields of other managers (HTTP 409)."""


def _item_key(item: Any) -> str:
    return f'k:{{"name":{json.dumps(item["name"])}}}'


def _assoc(key: str, value: Any) -> bool:
    return (
        key in ASSOCIATIVE
        and isinstance(value, list)
        and all(isinstance(x, dict) and "name" in x for x in value)
    )


def fields_of(obj: Any, prefix: Path = ()) -> set[Path]:
    """The leaf field paths of ``obj`` (status and server-set metadata left out)."""
    out: set[Path] = set()
    if not isinstance(obj, dict):
        return {prefix}
    for k, v in obj.items():
        p = (*prefix, f"f:{k}")
        if not prefix and k in ("status", "apiVersion", "kind"):
            continue
        if tuple(x[2:] for x in p) in UNTRACKED:
            continue
        if isinstance(v, dict) and v:
            out |= fields_of(v, p)
        elif _assoc(k, v):
            for item in v:
                out |= fields_of(item, (*p, _item_key(item)))
        else:
            out.add(p)
    return out


def _get(obj: Any, path: Path) -> Any:
    cur = obj
    for step in path:
        if cur is None:
            return None
        if step.startswith("f:"):
            cur = cur.get(step[2:]) if isinstance(cur, dict) else None
        else:
            name = json.loads(step[2:])["name"]
            cur = next((x for x in cur or [] if x.get("name") == name), None)
    return cur


def _remove(obj: Any, path: Path) -> None:
    """Delete the field at ``path``, then the maps/list items it leaves empty."""
    if not path:
        return
    if len(path) > 1 and path[-1] == "f:name" and path[-2].startswith("k:"):
        path = path[:-1]  # an associative item's key: the item goes
    parent = _get(obj, path[:-1])
    last = path[-1]
    if isinstance(parent, dict) and last.startswith("f:"):
        parent.pop(last[2:], None)
    elif isinstance(parent, list):
        name = json.loads(last[2:])["name"]
        parent[:] = [x for x in parent if x.get("name") != name]
    if parent in ({}, []) and len(path) > 1:
        _remove(obj, path[:-1])


def _merge(base: Any, applied: Any, key: str = "") -> Any:
    if isinstance(base, dict) and isinstance(applied, dict):
        out = dict(base)
        for k, v in applied.items():
            out[k] = _merge(base.get(k), v, k)
        return out
    if _assoc(key, applied) and _assoc(key, base or []):
        base = base or []
        by = {x["name"]: x for x in base}
        order = [x["name"] for x in base]
        for x in applied:
            if x["name"] not in by:
                order.append(x["name"])
            by[x["name"]] = _merge(by.get(x["name"]), x)
        return [by[n] for n in order]
    return copy.deepcopy(applied)


Managed = dict[str, tuple[str, set[Path]]]  # manager -> (operation, fields)


def apply(
    current: dict[str, Any] | None,
    applied: dict[str, Any],
    managed: Managed,
    manager: str,
    *,
    force: bool,
) -> tuple[dict[str, Any], Managed]:
    """The object after ``manager`` applies ``applied``, and the new ownership.

    Raises: Conflict (unless ``force``).
    """
    base = copy.deepcopy(current) if current is not None else {}
    new_fields = fields_of(applied)
    managed = {m: (op, set(f)) for m, (op, f) in managed.items()}
    conflicts = []
    for m, (_, owned) in managed.items():
        if m == manager:
            continue
        for p in sorted(owned & new_fields):
            if _get(base, p) != _get(applied, p):
                conflicts.append((m, p))
    if conflicts and not force:
        raise Conflict(
            "Apply failed with {} conflict(s): {}".format(
                len(conflicts),
                "; ".join(
                    f'conflict with "{m}": .{".".join(x[2:] for x in p)}' for m, p in conflicts
                ),
            )
        )
    for m, p in conflicts:
        managed[m][1].discard(p)
    result: dict[str, Any] = _merge(base, applied)
    before = managed.get(manager, ("Apply", set()))[1]
    others = set().union(*(f for m, (_, f) in managed.items() if m != manager))
    # deepest first; an associative item's key field last, so the item stays findable
    for p in sorted(before - new_fields - others, key=lambda p: (-len(p), p[-1] == "f:name")):
        _remove(result, p)
    managed[manager] = ("Apply", new_fields)
    return result, _prune(managed, result)


def update(
    before: dict[str, Any] | None, after: dict[str, Any], managed: Managed, manager: str
) -> Managed:
    """Ownership after a non-apply write by ``manager`` turned ``before`` into ``after``."""
    managed = {m: (op, set(f)) for m, (op, f) in managed.items()}
    changed = {p for p in fields_of(after) if before is None or _get(before, p) != _get(after, p)}
    for m in managed:
        if m != manager:
            managed[m][1].difference_update(changed)
    op, mine = managed.get(manager, ("Update", set()))
    managed[manager] = (op if op == "Apply" else "Update", mine | changed)
    return _prune(managed, after)


def _prune(managed: Managed, obj: dict[str, Any]) -> Managed:
    present = fields_of(obj)
    out = {m: (op, f & present) for m, (op, f) in managed.items()}
    return {m: v for m, v in out.items() if v[1]}


def fields_v1(paths: set[Path]) -> dict[str, Any]:
    """FieldsV1 (``{"f:spec": {"f:replicas": {}}}``) of a set of leaf paths."""
    root: dict[str, Any] = {}
    for p in sorted(paths):
        cur = root
        for step in p:
            cur = cur.setdefault(step, {})
    return root


def managed_fields(managed: Managed, api_version: str) -> list[dict[str, Any]]:
    """``metadata.managedFields`` entries."""
    return [
        {
            "manager": m,
            "operation": op,
            "apiVersion": api_version,
            "fieldsType": "FieldsV1",
            "fieldsV1": fields_v1(f),
        }
        for m, (op, f) in sorted(managed.items())
    ]
