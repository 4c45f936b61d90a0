#!/usr/bin/env bash
# Train on one node with the real deepspeed launcher: one process per GPU (or per CPU rank for testing).
#
#   NUM_GPUS=8 scripts/train.sh configs/train/instruct.yaml training.deepspeed=configs/deepspeed/zero2.json
#   DS_ACCELERATOR=cpu OMP_NUM_THREADS=1 NUM_GPUS=2 scripts/train.sh configs/train/align.yaml ...   (CPU ranks)
#
# Environment: NUM_GPUS (default: all), MASTER_PORT (default 29500), DS_LAUNCHER_ARGS (more launcher flags). Arguments: a training config and
# key=value overrides, exactly as for `vllm-i2v train`. Several nodes: scripts/train_multinode.sh.
set -euo pipefail
if [[ $# -lt 1 || "$1" == "-h" || "$1" == "--help" ]]; then awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; exit 0; fi
launcher=(--no_local_rank --module --master_port "${MASTER_PORT:-29500}")
[[ -n "${NUM_GPUS:-}" ]] && launcher+=(--num_gpus "$NUM_GPUS")
# shellcheck disable=SC2206
[[ -n "${DS_LAUNCHER_ARGS:-}" ]] && launcher+=(${DS_LAUNCHER_ARGS})  # any other deepspeed launcher flags
exec deepspeed "${launcher[@]}" vllm_i2v.cli train "$@"
