#!/usr/bin/env bash
# Deletes a slice: the queued resource and its TPU VM node (checkpoints in the bucket stay).
# shellcheck source=launch/_tpu_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_tpu_common.sh"

usage() {
  cat <<EOF2
Usage: launch/tpu_delete.sh --name=NAME --zone=ZONE [--async] [flags]

Deletes the queued resource NAME and, with it, its TPU VM node (--force), without asking. What the
workers hold locally is lost: fetch it first with launch/tpu_logs.sh --fetch=DIR (worker 0 also
copies its workdir to the run's bucket when a run ends).

  --async    return without waiting for the deletion to finish

$COMMON_HELP
EOF2
}

ASYNC=()
for arg in "$@"; do
  common_flag "$arg" && continue
  case "$arg" in
    --async) ASYNC=(--async) ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument '$arg' (see --help)" ;;
  esac
done
require_slice
run gcloud compute tpus queued-resources delete "$NAME" "${LOCATION[@]}" --force --quiet "${ASYNC[@]}"
