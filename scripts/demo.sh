#!/usr/bin/env bash
# One command for a newcomer: set up, start the local stack, produce payment events, run the pipeline.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
source "$REPO/scripts/setup.sh"

EVENTS="${EVENTS:-50000}"
say "starting the local stack (real Kafka broker, KRaft) in $KAPPALAKE_HOME"
kappalake stack up
say "producing $EVENTS payment events (with late, duplicate and malformed ones)"
kappalake produce payments --events "$EVENTS" --seed 1 --late-fraction 0.02 --duplicate-fraction 0.02 \
  --malformed-fraction 0.01
say "running the payments pipeline (bronze, silver and gold, one Spark application) until caught up"
kappalake run payments --layer all --available-now
kappalake dlq payments list --limit 5
kappalake status payments
say "gold: per-card velocity windows in ClickHouse (the local endpoint over chDB), read with FINAL"
kappalake query payments card_velocity_1m --limit 10
say "done. The broker and the ClickHouse endpoint keep running: 'source scripts/setup.sh' puts kappalake on PATH;"
say "'kappalake stack down' stops them."
