# shellcheck shell=bash
# shellcheck disable=SC2034  # the settings below are read by the scripts that source this file
# Sourced by launch/tpu_*.sh: the slice's flags, --dry-run, and printing/running commands.

set -euo pipefail

NAME="${TPU_NAME:-}"
ZONE="${TPU_ZONE:-}"
PROJECT="${TPU_PROJECT:-}"
DRY_RUN=0
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Where setup puts things on every worker (relative to the worker's home directory).
REMOTE_REPO="score_jax"
REMOTE_VENV="score_jax_venv"
REMOTE_RUNS="score_jax_runs"

COMMON_HELP="Slice flags (every command):
  --name=NAME          the queued resource and its TPU VM node [\$TPU_NAME]
  --zone=ZONE          e.g. us-west4-a [\$TPU_ZONE]
  --project=PROJECT    Google Cloud project [\$TPU_PROJECT; default: gcloud's configured project]
  --dry-run            print the commands instead of running them
  -h, --help           this help"

# common_flag ARG: applies ARG if it is a slice flag; returns 1 if it is not.
common_flag() {
  case "$1" in
    --name=*) NAME="${1#*=}" ;;
    --zone=*) ZONE="${1#*=}" ;;
    --project=*) PROJECT="${1#*=}" ;;
    --dry-run) DRY_RUN=1 ;;
    *) return 1 ;;
  esac
}

die() {
  echo "error: $*" >&2
  exit 2
}

# require_slice: checks the slice flags and sets LOCATION, the flags every gcloud call takes.
require_slice() {
  [[ -n $NAME ]] || die "--name is required (or export TPU_NAME)"
  [[ -n $ZONE ]] || die "--zone is required (or export TPU_ZONE)"
  LOCATION=("--zone=$ZONE")
  if [[ -n $PROJECT ]]; then
    LOCATION+=("--project=$PROJECT")
  fi
}

# run CMD...: prints CMD (quoted so it can be pasted into a shell) and runs it unless --dry-run.
run() {
  printf '+'
  printf ' %q' "$@"
  printf '\n'
  if [[ $DRY_RUN == 0 ]]; then
    "$@"
  fi
}

# on_workers WORKER COMMAND [FLAG...]: runs a shell command on one worker (0, 1, ...) or on all.
on_workers() {
  run gcloud compute tpus tpu-vm ssh "$NAME" "${LOCATION[@]}" "--worker=$1" "--command=$2" "${@:3}"
}
