#!/usr/bin/env bash
# Runs a config on every worker of a slice (one score_jax.main process per worker).
# shellcheck source=launch/_tpu_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_tpu_common.sh"

usage() {
  cat <<EOF
Usage: launch/tpu_run.sh --name=NAME --zone=ZONE --config=CONFIG --bucket=gs://BUCKET/PATH [flags]
                         [-- MAIN_FLAGS...]

Starts launch/tpu_worker.sh on all workers at once (gcloud compute tpus tpu-vm ssh --worker=all):
each runs \`python -m score_jax.main --config=CONFIG\` with checkpoints in BUCKET/PATH/checkpoints,
detached unless --foreground; rerunning the same command resumes from the newest checkpoint.

  --config=CONFIG   config file, relative to the repository (e.g. configs/stage2_math.py)
  --bucket=URL      gs:// folder for this run: checkpoints (shared by all workers) and, from worker 0,
                    a copy of the workdir (metrics.jsonl, TensorBoard, eval.json)
  --run=RUN         run name (default: the config's file name); workdir ~/$REMOTE_RUNS/RUN on each worker
  --foreground      stay attached and stream every worker's output (the run stops if ssh drops)
  MAIN_FLAGS        passed to score_jax.main, e.g. --config.model.hf_checkpoint=score_jax_files/gemma-2-2b-it
                    (relative paths are relative to the workers' home directory)

Then: launch/tpu_logs.sh --name=NAME --zone=ZONE --run=RUN --follow

$COMMON_HELP
EOF
}

CONFIG=""
BUCKET=""
RUN=""
FOREGROUND=()
EXTRA=()
while [[ $# -gt 0 ]]; do
  if common_flag "$1"; then
    shift
    continue
  fi
  case "$1" in
    --config=*) CONFIG="${1#*=}" ;;
    --bucket=*) BUCKET="${1#*=}" ;;
    --run=*) RUN="${1#*=}" ;;
    --foreground) FOREGROUND=(--foreground) ;;
    -h | --help) usage; exit 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) die "unknown argument '$1' (see --help; flags for score_jax.main go after --)" ;;
  esac
  shift
done
require_slice
[[ -n $CONFIG ]] || die "--config is required, e.g. --config=configs/stage2_math.py"
[[ $BUCKET == gs://* ]] || die "--bucket=gs://BUCKET/PATH is required: every worker reads and writes the checkpoints there"
[[ -f $REPO/$CONFIG ]] || die "--config=$CONFIG is not a file of this repository ($REPO)"
RUN="${RUN:-$(basename "$CONFIG" .py)}"

worker=(bash "$REMOTE_REPO/launch/tpu_worker.sh" "--run=$RUN" "--config=$CONFIG" "--bucket=${BUCKET%/}"
  "${FOREGROUND[@]}" -- "${EXTRA[@]}")
on_workers all "$(printf '%q ' "${worker[@]}")"
