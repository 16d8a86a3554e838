#!/usr/bin/env bash
# One command: set up, then run the whole test suite (tests start their own local Kafka broker).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"` for the fast set.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
source "$REPO/scripts/setup.sh"
# promtool (Debian package prometheus) checks and unit-tests the shipped alert rules.
command -v promtool >/dev/null || apt_install prometheus
say "running the tests"
exec python -m pytest "$@"
