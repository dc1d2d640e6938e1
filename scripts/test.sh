#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh machine, then run it.
#   bash scripts/test.sh [pytest args...]
# System packages (when root and apt-get exists): Slurm + munge for the real single-node Slurm
# tests, Chromium for the report screenshot test. Without them those tests skip with a reason.
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && [ "${PRS_SKIP_APT:-0}" != 1 ]; then
  missing=""
  for pkg in slurm-wlm munge chromium; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
  done
  if [ -n "$missing" ]; then
    echo "+ apt-get install$missing"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null) \
      || echo "warning: could not install$missing; the tests that need them will skip"
  fi
fi
source scripts/venv.sh 'mpich,test,examples,tensorflow,remote'
exec "$VENV/bin/python" -m pytest "$@"
