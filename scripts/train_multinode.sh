#!/usr/bin/env bash
# Train on several nodes with the real deepspeed launcher, from a hostfile (MPI style, one line a node):
#
#   worker-1 slots=8
#   worker-2 slots=8
#
#   HOSTFILE=hostfile scripts/train_multinode.sh configs/train/instruct.yaml training.deepspeed=configs/deepspeed/zero3.json
#
# Run it on the first node; it starts the ranks on every node over passwordless ssh (pdsh; LAUNCHER=openmpi
# or mvapich to use those instead). Every node needs the same checkout, environment, data and model paths.
# Environment: HOSTFILE (required), MASTER_ADDR (default: the first host), MASTER_PORT (default 29500),
# NUM_NODES, NUM_GPUS (per node), LAUNCHER, DS_LAUNCHER_ARGS (more deepspeed launcher flags).
set -euo pipefail
if [[ $# -lt 1 || "$1" == "-h" || "$1" == "--help" ]]; then awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; exit 0; fi
: "${HOSTFILE:?set HOSTFILE to a hostfile (lines like: worker-1 slots=8)}"
launcher=(--no_local_rank --module --hostfile "$HOSTFILE" --master_port "${MASTER_PORT:-29500}")
[[ -n "${MASTER_ADDR:-}" ]] && launcher+=(--master_addr "$MASTER_ADDR")
[[ -n "${NUM_NODES:-}" ]] && launcher+=(--num_nodes "$NUM_NODES")
[[ -n "${NUM_GPUS:-}" ]] && launcher+=(--num_gpus "$NUM_GPUS")
[[ -n "${LAUNCHER:-}" ]] && launcher+=(--launcher "$LAUNCHER")
# shellcheck disable=SC2206
[[ -n "${DS_LAUNCHER_ARGS:-}" ]] && launcher+=(${DS_LAUNCHER_ARGS})  # any other deepspeed launcher flags
exec deepspeed "${launcher[@]}" vllm_i2v.cli train "$@"
