#!/usr/bin/env bash
# Re-run every benchmark named in BENCHMARKS.md; one JSON object per line on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
C=.venv/bin/costctl
SHARED="${COSTCTL_SHARED_DIR:-../shared}"
$C bench ingest --events 1000000 --backend sqlite --json
$C bench ingest --events 1000000 --backend postgres --json
$C bench attribute --events 10000000 --json
if $C bench --help | grep -q " pack "; then
  $C bench pack --pods "$SHARED/data/alibaba-gpu-2023/openb_pod_list_default.csv" \
    --nodes "$SHARED/data/alibaba-gpu-2023/openb_node_list_gpu_node.csv" --json
fi
if $C bench --help | grep -q " authorize "; then
  $C bench authorize --workers 4 --rps 2000 --seconds 20 --json
fi
if $C bench --help | grep -q " gateway "; then
  $C bench gateway --workers 1 --rps 300 --seconds 20 --batcher-events 200000 --json
fi
if $C bench --help | grep -q " dashboard "; then
  $C bench dashboard --events 10000000 --json
fi
# N workers on an empty PostgreSQL database, one kill -9 mid-rollup
psql -h 127.0.0.1 -U postgres -d test -qc "DROP DATABASE IF EXISTS costctl_soak WITH (FORCE)" \
  -c "CREATE DATABASE costctl_soak"
SOAK=postgresql://postgres@127.0.0.1:5432/costctl_soak
$C --database-url "$SOAK" db upgrade >/dev/null
$C --database-url "$SOAK" bench workers --workers 3 --seconds 120 --rollup-interval 5 --json
