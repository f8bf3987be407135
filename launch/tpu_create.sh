#!/usr/bin/env bash
# Reserves a Cloud TPU slice through a queued resource and waits until it is ready.
# shellcheck source=launch/_tpu_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/_tpu_common.sh"

usage() {
  cat <<EOF
Usage: launch/tpu_create.sh --name=NAME --zone=ZONE --accelerator-type=TYPE [--spot | --reserved] [flags]

Requests a TPU VM slice as a queued resource (the node gets the same name) and, unless --no-wait,
polls until it is ACTIVE (it fails if the request FAILED or was SUSPENDED).

  --accelerator-type=TYPE   e.g. v5litepod-16 (4 hosts of 4 v5e chips), v4-32, v5p-16, v6e-8
  --runtime-version=V       TPU VM image (default from the type: v5litepod -> v2-alpha-tpuv5-lite,
                            v5p -> v2-alpha-tpuv5, v6e -> v2-alpha-tpuv6e, others tpu-ubuntu2204-base)
  --spot                    Spot capacity (cheaper, may be preempted; training resumes from checkpoints)
  --reserved                the project's reserved capacity
  --valid-until=DURATION    give up if not provisioned within DURATION (e.g. 6h)
  --no-wait                 return once the request is queued
  --poll-seconds=N          seconds between state checks (default 30)

$COMMON_HELP
EOF
}

TYPE=""
RUNTIME=""
CAPACITY=()
VALID_UNTIL=""
WAIT=1
POLL=30
for arg in "$@"; do
  common_flag "$arg" && continue
  case "$arg" in
    --accelerator-type=*) TYPE="${arg#*=}" ;;
    --runtime-version=*) RUNTIME="${arg#*=}" ;;
    --spot) CAPACITY=(--spot) ;;
    --reserved) CAPACITY=(--reserved) ;;
    --valid-until=*) VALID_UNTIL="${arg#*=}" ;;
    --no-wait) WAIT=0 ;;
    --poll-seconds=*) POLL="${arg#*=}" ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown argument '$arg' (see --help)" ;;
  esac
done
require_slice
[[ -n $TYPE ]] || die "--accelerator-type is required, e.g. --accelerator-type=v5litepod-16"
if [[ -z $RUNTIME ]]; then
  case "$TYPE" in
    v5litepod-* | v5e-*) RUNTIME="v2-alpha-tpuv5-lite" ;;
    v5p-*) RUNTIME="v2-alpha-tpuv5" ;;
    v6e-*) RUNTIME="v2-alpha-tpuv6e" ;;
    *) RUNTIME="tpu-ubuntu2204-base" ;;
  esac
fi

create=(gcloud compute tpus queued-resources create "$NAME" "--node-id=$NAME" "${LOCATION[@]}"
  "--accelerator-type=$TYPE" "--runtime-version=$RUNTIME" "${CAPACITY[@]}")
if [[ -n $VALID_UNTIL ]]; then
  create+=("--valid-until-duration=$VALID_UNTIL")
fi
run "${create[@]}"

describe=(gcloud compute tpus queued-resources describe "$NAME" "${LOCATION[@]}" "--format=value(state.state)")
if [[ $WAIT == 0 ]]; then
  echo "queued; check with: ${describe[*]}"
  exit 0
fi
if [[ $DRY_RUN == 1 ]]; then
  run "${describe[@]}"
  echo "(then every ${POLL}s until the state is ACTIVE)"
  exit 0
fi
while true; do
  state="$("${describe[@]}")"
  echo "$(date +%H:%M:%S) $NAME: $state"
  case "$state" in
    ACTIVE) break ;;
    FAILED | SUSPENDED) die "the queued resource is $state; see: gcloud compute tpus queued-resources describe $NAME --zone=$ZONE" ;;
  esac
  sleep "$POLL"
done
echo "ready: next, launch/tpu_setup.sh --name=$NAME --zone=$ZONE"
