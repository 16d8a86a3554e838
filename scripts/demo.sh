#!/usr/bin/env bash
# One command for a newcomer: set up, start the local stack, produce payment events, run the pipeline.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
source "$REPO/scripts/setup.sh"

# 'bash scripts/demo.sh avro' (or protobuf) runs the payments pipeline on that format instead of JSON.
FORMAT="${1:-json}"
case "$FORMAT" in
  json) PIPELINE=payments; EXTRA=() ;;
  avro) PIPELINE=payments_avro; EXTRA=(--evolve) ;;   # two versions of the subject in one topic
  protobuf) PIPELINE=payments_protobuf; EXTRA=() ;;
  *) echo "usage: bash scripts/demo.sh [json|avro|protobuf]" >&2; exit 2 ;;
esac
EVENTS="${EVENTS:-50000}"
say "starting the local stack (real Kafka broker, KRaft; ClickHouse and Schema Registry endpoints) in $KAPPALAKE_HOME"
kappalake stack up
say "producing $EVENTS payment events as $FORMAT (with late, duplicate and malformed ones)"
kappalake produce "$PIPELINE" --format "$FORMAT" --events "$EVENTS" --seed 1 --late-fraction 0.02 \
  --duplicate-fraction 0.02 --malformed-fraction 0.01 ${EXTRA[@]+"${EXTRA[@]}"}
say "running the $PIPELINE pipeline (bronze, silver and gold, one Spark application) until caught up"
kappalake run "$PIPELINE" --layer all --available-now
kappalake dlq "$PIPELINE" list --limit 5
kappalake status "$PIPELINE"
say "gold: per-card velocity windows in ClickHouse (the local endpoint over chDB), read with FINAL"
kappalake query "$PIPELINE" card_velocity_1m --limit 10
say "done. The broker and the ClickHouse endpoint keep running: 'source scripts/setup.sh' puts kappalake on PATH;"
say "'kappalake stack down' stops them."
