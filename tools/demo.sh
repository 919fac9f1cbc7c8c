#!/bin/sh
# demo.sh — kiln's main job on the shipped default config (conf/kiln.yaml), no internet:
# starts a local SMTP sink for the demo.test route, starts kilnd, submits a batch of mail
# (mailbox simulator addresses and routed demo.test recipients), waits for delivery, then
# prints the events and `kilnctl quota`, and stops everything it started by PID.
set -eu
cd "$(dirname "$0")/.."
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
exec "$PY" tools/demo.py "$@"
