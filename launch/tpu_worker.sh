#!/usr/bin/env bash
# Runs on each TPU VM worker (launch/tpu_run.sh starts it on all of them): one training process.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage (on a worker): bash ~/score_jax/launch/tpu_worker.sh --run=RUN --config=CONFIG --bucket=gs://BUCKET/PATH
                     [--foreground] [--python=PY] [--dry-run] [-- MAIN_FLAGS...]

Starts `python -m score_jax.main` for this worker, detached (it survives the ssh session), with
its output in ~/score_jax_runs/RUN/worker_<N>.log. Every worker runs the same command; JAX finds
the slice's other workers itself (jax.distributed on Cloud TPU).

  --run=RUN        run name: the workdir is ~/score_jax_runs/RUN (metrics, TensorBoard, eval on worker 0)
  --config=CONFIG  config file, relative to the repository (e.g. configs/stage2_math.py)
  --bucket=URL     checkpoints go to URL/checkpoints, which every worker reads and writes (the run
                   resumes from there, on this slice or a new one); worker 0 also copies URL/workdir
                   into the workdir before starting and the workdir back to URL/workdir at the end
  --foreground     run attached (output to the terminal and the log)
  --python=PY      interpreter (default ~/score_jax_venv/bin/python)
  --dry-run        print the commands instead of running them
  MAIN_FLAGS       more flags for score_jax.main, e.g. --config.rl.alpha=5; relative paths are
                   relative to the home directory (e.g. score_jax_files/gemma-2-2b-it)
EOF
}

RUN=""
CONFIG=""
BUCKET=""
FOREGROUND=0
PY="$HOME/score_jax_venv/bin/python"
DRY_RUN=0
ARGS=("$@")
while [[ $# -gt 0 ]]; do
  case "$1" in
    --run=*) RUN="${1#*=}" ;;
    --config=*) CONFIG="${1#*=}" ;;
    --bucket=*) BUCKET="${1#*=}" ;;
    --foreground) FOREGROUND=1 ;;
    --python=*) PY="${1#*=}" ;;
    --dry-run) DRY_RUN=1 ;;
    -h | --help) usage; exit 0 ;;
    --) shift; break ;;
    *) echo "error: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
EXTRA=("$@")
[[ -n $RUN && -n $CONFIG && -n $BUCKET ]] || { echo "error: --run, --config and --bucket are required" >&2; exit 2; }

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORKDIR="$HOME/score_jax_runs/$RUN"
if [[ -z ${TPU_WORKER_ID:-} ]]; then
  TPU_WORKER_ID="$(curl -sf -H 'Metadata-Flavor: Google' \
    http://metadata.google.internal/computeMetadata/v1/instance/attributes/agent-worker-number || echo 0)"
fi
LOG="$WORKDIR/worker_$TPU_WORKER_ID.log"

run() {
  printf '+'
  printf ' %q' "$@"
  printf '\n'
  if [[ $DRY_RUN == 0 ]]; then
    "$@"
  fi
}

if [[ $FOREGROUND == 0 && $DRY_RUN == 0 ]]; then
  mkdir -p "$WORKDIR"
  setsid nohup bash "${BASH_SOURCE[0]}" --foreground "${ARGS[@]}" >"$LOG" 2>&1 </dev/null &
  echo "worker $TPU_WORKER_ID: started (pid $!), log $LOG"
  exit 0
fi

cd "$HOME"
run mkdir -p "$WORKDIR"
if [[ $TPU_WORKER_ID == 0 ]]; then
  # A resumed run keeps appending to the same metrics; nothing to copy on the first run.
  run gcloud storage rsync --recursive "$BUCKET/workdir" "$WORKDIR" || echo "no $BUCKET/workdir yet"
fi
status=0
run "$PY" -m score_jax.main "--config=$REPO/$CONFIG" "--workdir=$WORKDIR" \
  "--config.checkpoint.directory=$BUCKET/checkpoints" "${EXTRA[@]}" || status=$?
if [[ $TPU_WORKER_ID == 0 ]]; then
  run gcloud storage rsync --recursive "$WORKDIR" "$BUCKET/workdir"
fi
echo "worker $TPU_WORKER_ID: score_jax.main exited with status $status"
exit "$status"
