#!/usr/bin/env bash
# One command: set up, then run the tests (they start their own local Kafka broker).
#
#   bash scripts/test.sh              the whole suite on the selected Spark line (KAPPALAKE_SPARK, default
#                                     4.2), then the end-to-end `compat` set on the Spark 4.0 line (the
#                                     Databricks 17.3 LTS line) in its own virtualenv, .venv-spark4.0, with
#                                     KAPPALAKE_COMPAT_CRASH_KILLS (default 4) SIGKILLs in the crash test.
#                                     Exit 0 only when both runs pass; otherwise the first failing exit code.
#                                     The crash test SIGKILLs 12 times (KAPPALAKE_CRASH_KILLS overrides).
#   bash scripts/test.sh ARGS...      pytest ARGS on the selected line only (e.g. -m "not slow" for the fast
#                                     set); the 4.0 set is skipped and the script says so.
#   KAPPALAKE_SPARK=4.0 bash scripts/test.sh -m compat    the 4.0 set alone.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
COMPAT_LINE="4.0"
source "$REPO/scripts/setup.sh"
# promtool (Debian package prometheus) checks and unit-tests the shipped alert rules.
command -v promtool >/dev/null || apt_install prometheus

say "running the tests on Spark line $KAPPALAKE_SPARK${*:+ (pytest $*)}"
main=0
# The crash-recovery loop SIGKILLs the job KAPPALAKE_CRASH_KILLS times: 12 here (as many as it has kill points,
# ~4 minutes less than 20), 20 when run alone; bench/reliability.py runs the long loops (60 kills).
KAPPALAKE_CRASH_KILLS="${KAPPALAKE_CRASH_KILLS:-12}" python -m pytest "$@" || main=$?
if [ $# -gt 0 ]; then
  [ "$KAPPALAKE_SPARK" = "$COMPAT_LINE" ] || say "pytest arguments given: the Spark $COMPAT_LINE compat set is skipped" \
    "(run it alone with: KAPPALAKE_SPARK=$COMPAT_LINE bash scripts/test.sh -m compat)"
  exit "$main"
fi
if [ "$KAPPALAKE_SPARK" = "$COMPAT_LINE" ]; then
  exit "$main"   # the whole suite ran on the compat line itself
fi

say "running the end-to-end compat set on Spark line $COMPAT_LINE (.venv-spark$COMPAT_LINE)"
compat=0
started=$SECONDS
env -u KAPPALAKE_VENV KAPPALAKE_SPARK="$COMPAT_LINE" \
  KAPPALAKE_CRASH_KILLS="${KAPPALAKE_COMPAT_CRASH_KILLS:-4}" \
  bash "$REPO/scripts/test.sh" -m compat || compat=$?
say "Spark $COMPAT_LINE compat set: exit $compat after $(( (SECONDS - started) / 60 )) min $(( (SECONDS - started) % 60 )) s;" \
  "Spark line $KAPPALAKE_SPARK suite: exit $main"
if [ "$main" -ne 0 ]; then exit "$main"; fi
exit "$compat"
