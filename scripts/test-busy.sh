#!/usr/bin/env bash
# Run tests while every CPU is kept busy by another program: `stress-ng --cpu N` (N = the
# CPUs, or BUSY_CPUS) runs beside pytest and is stopped however pytest ends. No test may
# depend on an idle machine: tests wait on events and states, never on spare CPU.
# Usage: scripts/test-busy.sh [pytest args...]   (make test-busy)
set -euo pipefail

if ! command -v stress-ng >/dev/null 2>&1; then
  echo "stress-ng is missing: run 'make system-deps' as root (Debian: apt-get install stress-ng)" >&2
  exit 2
fi
cpus="${BUSY_CPUS:-$(nproc)}"
# In its own session, so stopping it stops all of its workers.
setsid stress-ng --cpu "$cpus" --quiet >/dev/null 2>&1 &
stressor=$!
sleep 1
kill -0 "$stressor" 2>/dev/null || { echo "test-busy: stress-ng did not start" >&2; exit 2; }
stop() { kill -TERM -- "-$stressor" 2>/dev/null || true; wait "$stressor" 2>/dev/null || true; }
trap stop EXIT
echo "test-busy: stress-ng --cpu $cpus running beside the tests (pid $stressor)"
start=$SECONDS
status=0
"${PYTEST:-.venv/bin/pytest}" "$@" || status=$?
echo "test-busy: pytest exited $status after $((SECONDS - start)) s with $cpus CPUs kept busy by stress-ng"
exit "$status"
