#!/usr/bin/env bash
# Shows, streams or fetches a run's logs and outputs from the workers of a slice.
# shellcheck source=launch/_tpu_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_tpu_common.sh"

usage() {
  cat <<EOF
Usage: launch/tpu_logs.sh --name=NAME --zone=ZONE --run=RUN [--follow | --fetch=DIR] [flags]

Without --follow or --fetch, prints the last --lines of the worker's log.

  --run=RUN        the run name tpu_run.sh used (its default: the config's file name)
  --worker=W       0 (default; process 0 prints the progress lines), 1, ... or all
  --lines=N        lines to show (default 100)
  --follow         stream the log until interrupted
  --fetch=DIR      copy every worker's log to DIR/logs/<worker>.log and worker 0's workdir
                   (metrics.jsonl, TensorBoard, eval.json) to DIR/RUN

$COMMON_HELP
EOF
}

RUN=""
WORKER="0"
LINES=100
MODE="tail"
DEST=""
for arg in "$@"; do
  common_flag "$arg" && continue
  case "$arg" in
    --run=*) RUN="${arg#*=}" ;;
    --worker=*) WORKER="${arg#*=}" ;;
    --lines=*) LINES="${arg#*=}" ;;
    --follow) MODE="follow" ;;
    --fetch=*) MODE="fetch"; DEST="${arg#*=}" ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument '$arg' (see --help)" ;;
  esac
done
require_slice
[[ -n $RUN ]] || die "--run is required (the run name tpu_run.sh used)"
logs="$REMOTE_RUNS/$(printf '%q' "$RUN")/worker_*.log"

case "$MODE" in
  tail) on_workers "$WORKER" "tail -n $LINES $logs" ;;
  follow) on_workers "$WORKER" "tail -n +1 -F $logs" ;;
  fetch)
    run mkdir -p "$DEST/logs"
    on_workers all "cat $logs" --output-directory="$DEST/logs"
    run gcloud compute tpus tpu-vm scp --recurse "$NAME:$REMOTE_RUNS/$RUN" "$DEST/" "${LOCATION[@]}" --worker=0
    ;;
esac
