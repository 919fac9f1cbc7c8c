#!/bin/sh
# loadtest.sh — a load test of kilnd in one command (README "Load testing"): kiln-sink on
# loopback addresses, kilnd on conf/examples/loadtest.yaml (or --config FILE) in a temporary
# directory, kiln-loadgen with a progress line, then a summary table (or --json) of
# accepted/s, delivered/s, 250->delivery p50/p99, per-IP, per-pool and per-set counts,
# deferrals by reason, kilnd CPU and peak RSS. Everything it starts it stops by PID, also on
# Ctrl-C. Binaries: $KILN_BUILDDIR when set (make loadtest sets it), else this checkout,
# else PATH. `tools/loadtest.sh --help` lists the options.
set -eu
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
exec "$PY" "$(dirname "$0")/loadtest.py" "$@"
