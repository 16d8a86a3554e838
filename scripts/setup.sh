#!/usr/bin/env bash
# Set up kappalake on this machine: Java 17 + Maven (apt, if missing), a virtualenv with the package,
# its dev tools and the selected Spark line's pyspark + delta-spark, and that line's JVM jars resolved
# from Maven Central into the data dir. Safe to run again: every step is skipped when already done.
# Sourced by demo.sh and test.sh.
#
# KAPPALAKE_SPARK selects the Spark line: 4.2 (default), 4.1 or 4.0 (Databricks 17.3 LTS). The default
# line lives in .venv, another line in .venv-spark<line> (KAPPALAKE_VENV overrides), so switching lines
# never reinstalls the other's venv.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export KAPPALAKE_HOME="${KAPPALAKE_HOME:-$REPO/.kappalake}"
PYTHON="${PYTHON:-python3}"

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
fail() { printf '\033[1;31m[setup] error:\033[0m %s\n' "$*" >&2; exit 1; }

apt_install() {
  local runner=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then runner="sudo"; else
      fail "missing system packages: $*. Install them with: sudo apt-get install -y $*"
    fi
  fi
  command -v apt-get >/dev/null || fail "missing system packages: $* (no apt-get here; install them by hand)"
  say "installing $* with apt-get"
  $runner apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $runner apt-get install -y -qq "$@" >/dev/null
}

java_major() { java -version 2>&1 | sed -n 's/.*version "\([0-9]*\)\.*.*/\1/p' | head -1; }

# --- system packages: Python venv support, Java 17+, Maven ---------------------------------------
command -v "$PYTHON" >/dev/null || apt_install python3 python3-venv
"$PYTHON" -c 'import sys; assert sys.version_info >= (3, 10)' 2>/dev/null \
  || fail "$PYTHON is older than 3.10; install Python 3.10-3.12"
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null || apt_install python3-venv
if ! command -v java >/dev/null || [ "$(java_major)" -lt 17 ] 2>/dev/null; then
  apt_install openjdk-17-jre-headless
fi
[ "$(java_major)" -ge 17 ] || fail "Java 17 or newer is required; found: $(java -version 2>&1 | head -1)"
command -v mvn >/dev/null || apt_install maven
# PostgreSQL 15 for the optional CDC stack (`kappalake stack up --with cdc`): installed when missing and we
# are root with apt-get; otherwise (or if that fails) only a note, CDC is optional.
if [ ! -x /usr/lib/postgresql/15/bin/pg_ctl ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    say "installing postgresql-15 for the optional CDC stack (stack up --with cdc)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15; } >/dev/null 2>&1 \
      || say "note: could not install postgresql-15; 'stack up --with cdc' needs it (apt-get install -y postgresql-15)"
  else
    say "note: PostgreSQL 15 is not installed; 'stack up --with cdc' needs it (apt-get install -y postgresql-15)"
  fi
fi

# --- the Spark line: its pins from src/kappalake/versions.py (stdlib only, runs before the install) -----
pin() { PYTHONPATH="$REPO/src" "$PYTHON" -m kappalake.versions --get "$1"; }
ASKED_LINE="${KAPPALAKE_SPARK:-}"
KAPPALAKE_SPARK="$(pin kappalake_spark)" \
  || fail "KAPPALAKE_SPARK=$ASKED_LINE is not a supported Spark line (see the line above)"
export KAPPALAKE_SPARK
LINE_PIP="$(pin pip)"     # e.g. "pyspark==4.2.0 delta-spark==4.4.0"
if [ -n "${KAPPALAKE_VENV:-}" ]; then VENV="$KAPPALAKE_VENV"
elif [ "$KAPPALAKE_SPARK" = "$(KAPPALAKE_SPARK='' pin kappalake_spark)" ]; then VENV="$REPO/.venv"
else VENV="$REPO/.venv-spark$KAPPALAKE_SPARK"; fi
say "Spark line $KAPPALAKE_SPARK ($LINE_PIP) in $VENV"

# --- virtualenv with the package ------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  say "creating virtualenv $VENV"
  "$PYTHON" -m venv "$VENV"
fi
STAMP="$VENV/.kappalake-installed"
CONSTRAINTS="$VENV/kappalake-constraints.txt"
WANT="$( (cat "$REPO/pyproject.toml"; echo "$LINE_PIP") | sha256sum | cut -c1-64)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  say "installing kappalake and its dependencies ($LINE_PIP) into $VENV"
  tr ' ' '\n' <<< "$LINE_PIP" > "$CONSTRAINTS"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -c "$CONSTRAINTS" -e "$REPO[dev]"
  echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
export PYSPARK_PYTHON="$VENV/bin/python"

# --- a local-only PII key (the payments pipeline pseudonymises card ids) -----------------------------
# Never used outside this data dir; production jobs read KAPPALAKE_PII_KEY from their secret store.
if [ -z "${KAPPALAKE_PII_KEY:-}" ]; then
  mkdir -p "$KAPPALAKE_HOME"
  [ -s "$KAPPALAKE_HOME/pii.key" ] || (umask 077; "$VENV/bin/python" -c 'import secrets; print(secrets.token_hex(32))' \
    > "$KAPPALAKE_HOME/pii.key")
  KAPPALAKE_PII_KEY="$(cat "$KAPPALAKE_HOME/pii.key")"
  export KAPPALAKE_PII_KEY
fi

# --- JVM jars (Kafka broker, Spark Kafka connector, Delta) ---------------------------------------
say "checking Java and the pinned JVM jars (first run downloads them from Maven Central)"
kappalake setup
