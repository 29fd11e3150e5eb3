"""device_hour: GPU and MIG-instance samples summed per hour x device, in SQL (for dashboards).

One device, one instant, one metered interval, as in attribution: a reading at ``ts`` covers
[ts, ts + interval_s), and of each reading only the time no earlier reading of the same
device covered counts (two collectors sampling one GPU do not double its hours).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.engine import Connection

from billing.models import DeviceHour, GpuSample, table_of
from billing.sqltime import epoch_expr, greatest, hour_text_expr, least
from billing.windows import Window

# The longest interval a sample may stand for (billing.schemas.GpuSampleIn.interval_s).
MAX_INTERVAL = timedelta(hours=1)


def replace_device_hours(conn: Connection, window: Window) -> int:
    """Re-sum ``gpu_sample`` per hour x device into ``device_hour`` for ``window``'s hours.

    Details: a reading adds new_s = interval_s - min(interval_s, max(0, E - t0)) seconds,
    where t0 is its start and E the latest end of the device's earlier readings (from up to
    one interval before the window); sample_s = Σ new_s, busy_s = Σ sm_util/100 x new_s (no
    sm_util: not busy), both in the hour of ``ts``. Delete the hours, then one INSERT ...
    SELECT ... GROUP BY; SQLite's hour text has the form every other timestamp has.
    """
    window = window.hour_aligned()
    s, d = table_of(GpuSample).c, table_of(DeviceHour)
    t0 = epoch_expr(conn, s.ts)
    prev_end = func.max(t0 + s.interval_s).over(
        partition_by=s.gpu_uuid, order_by=s.ts, rows=(None, -1)
    )
    readings = (
        select(
            s.ts,
            s.gpu_uuid,
            s.parent_uuid,
            s.gpu_type,
            s.mig_profile,
            s.sm_util,
            s.interval_s,
            t0.label("t0"),
            prev_end.label("prev_end"),
        )
        .where(s.ts >= window.start - MAX_INTERVAL, s.ts < window.end)
        .subquery("r")
    )
    r = readings.c
    overlap = greatest(conn, 0.0, func.coalesce(r.prev_end, r.t0) - r.t0)
    new_s = r.interval_s - least(conn, r.interval_s, overlap)
    hour: Any = hour_text_expr(conn, r.ts)
    conn.execute(delete(d).where(d.c.hour >= window.start, d.c.hour < window.end))
    summed = (
        select(
            hour,
            r.gpu_uuid,
            func.max(r.parent_uuid),
            func.max(r.gpu_type),
            func.max(r.mig_profile),
            func.sum(new_s),
            func.sum(func.coalesce(r.sm_util, 0.0) * new_s / 100.0),
            func.min(r.ts),
            func.max(r.ts),
            func.max(r.interval_s),
        )
        .where(r.ts >= window.start)
        .group_by(hour, r.gpu_uuid)
    )
    # the select above lists device_hour's columns in table order
    res = conn.execute(insert(d).from_select([c.name for c in d.c], summed))
    return int(res.rowcount or 0)
