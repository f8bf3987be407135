#!/usr/bin/env bash
# Ships this repository to every worker of a slice and installs it with pinned dependencies.
# shellcheck source=launch/_tpu_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_tpu_common.sh"

usage() {
  cat <<EOF
Usage: launch/tpu_setup.sh --name=NAME --zone=ZONE [--stage=SRC ...] [flags]

On every worker: unpacks a git archive of this repository into ~/$REMOTE_REPO (committed files of
--ref only: commit what you want to run), makes a virtual environment ~/$REMOTE_VENV with
--python (installed from Ubuntu's packages if missing), installs launch/requirements-tpu.txt
(pinned versions, jax[tpu] with its libtpu) and the package, and prints each worker's JAX
version and local TPU devices. Safe to rerun (e.g. after a new commit).

  --ref=REV        git revision to ship (default HEAD)
  --python=PY      interpreter on the workers, 3.11 or newer (default python3.11)
  --stage=SRC      also copy SRC to ~/score_jax_files/ on every worker: a local directory (scp) or a
                   gs:// folder (copied by the workers); e.g. the HF checkpoint and the MATH files.
                   Repeatable.

$COMMON_HELP
EOF
}

REF="HEAD"
PY="python3.11"
STAGE=()
for arg in "$@"; do
  common_flag "$arg" && continue
  case "$arg" in
    --ref=*) REF="${arg#*=}" ;;
    --python=*) PY="${arg#*=}" ;;
    --stage=*) STAGE+=("${arg#*=}") ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument '$arg' (see --help)" ;;
  esac
done
require_slice

if [[ -n "$(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null)" ]]; then
  echo "note: uncommitted changes are not shipped (git archive $REF)" >&2
fi
tarball="${TMPDIR:-/tmp}/score_jax-$NAME.tar.gz"
run git -C "$REPO" archive --format=tar.gz "--output=$tarball" "$REF"
run gcloud compute tpus tpu-vm scp "$tarball" "$NAME:score_jax.tar.gz" "${LOCATION[@]}" --worker=all

py="$(printf '%q' "$PY")"
install="set -e
command -v $py >/dev/null || { sudo apt-get update -qq && sudo apt-get install -y -qq $py $py-venv; }
rm -rf ~/$REMOTE_REPO && mkdir -p ~/$REMOTE_REPO ~/score_jax_files ~/$REMOTE_RUNS
tar -xzf ~/score_jax.tar.gz -C ~/$REMOTE_REPO
[ -x ~/$REMOTE_VENV/bin/python ] || $py -m venv ~/$REMOTE_VENV || { sudo apt-get install -y -qq $py-venv && $py -m venv ~/$REMOTE_VENV; }
~/$REMOTE_VENV/bin/pip install -q --upgrade pip
~/$REMOTE_VENV/bin/pip install -q -r ~/$REMOTE_REPO/launch/requirements-tpu.txt
~/$REMOTE_VENV/bin/pip install -q --no-deps -e ~/$REMOTE_REPO
~/$REMOTE_VENV/bin/python -c 'import jax; print(\"jax\", jax.__version__, jax.local_device_count(), \"local devices\")'"
on_workers all "$install"

for src in "${STAGE[@]}"; do
  if [[ $src == gs://* ]]; then
    on_workers all "gcloud storage cp --recursive $(printf '%q' "$src") ~/score_jax_files/"
  else
    [[ -e $src || $DRY_RUN == 1 ]] || die "--stage=$src does not exist"
    run gcloud compute tpus tpu-vm scp --recurse "$src" "$NAME:score_jax_files/" "${LOCATION[@]}" --worker=all
  fi
done
echo "set up: next, launch/tpu_run.sh --name=$NAME --zone=$ZONE --config=configs/... --bucket=gs://BUCKET/RUN"
