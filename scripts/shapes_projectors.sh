#!/usr/bin/env bash
# Train the comparison models of the README's shapes-world table, each exactly as the bundled model's video stage
# (configs/shapes/video.yaml) but with another projector, from the same stage-0 tower: stpool, mlp, qformer, and
# timeonly (the bundled adapool without its motion tokens); and the training-free baseline: the same tower as an
# IMAGE LLM (adapool with one time step, trained on stills only), which on a video sees its frames mean-pooled
# over time and has had no video training.
#
#   scripts/build_demo_model.sh                       # first: the stage-0 tower and the data
#   scripts/shapes_projectors.sh meanpool timeonly stpool mlp qformer
#   python scripts/shapes_table.py ...                # then: the table
#
# Environment: DATA (data/shapes), OUT (outputs/shapes). Arguments: which models (default: all five).
set -euo pipefail
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; exit 0; fi
cd "$(dirname "$0")/.."
DATA=${DATA:-data/shapes}
OUT=${OUT:-outputs/shapes}
declare -A PROJECTOR=(
  [meanpool]="projector.grid=[1,3,3];projector.motion_tokens=false"  # ; separates overrides
  [timeonly]="projector.motion_tokens=false"
  [stpool]="projector={type: stpool}"
  [mlp]="projector={type: mlp, pool_stride: 2}"
  [qformer]="projector={type: qformer, num_queries: 32, hidden_size: 192, num_heads: 3, intermediate_size: 768}"
)
models=("$@")
[[ ${#models[@]} -gt 0 ]] || models=(meanpool timeonly stpool mlp qformer)
for one in "${models[@]}"; do
  [[ -n "${PROJECTOR[$one]:-}" ]] || { echo "unknown model $one (known: ${!PROJECTOR[*]})" >&2; exit 2; }
  IFS=';' read -ra overrides <<< "${PROJECTOR[$one]}"
  [[ -f "$OUT-$one/base/config.json" ]] || vllm-i2v build configs/shapes/model.yaml "$OUT-$one/base" vision="$OUT/stage0/tower" "${overrides[@]}"
  if [[ $one == meanpool ]]; then  # an image LLM: stills with their questions, one per conversation
    vllm-i2v data shapes "$DATA-stills" --images --count 12000 --seed 0 --single-turn
    data=(data.train="$DATA-stills/images.json" data.video_root="$DATA-stills/images" feature_cache="$DATA-stills/features")
  else
    data=(data.train="$DATA/train.json" data.video_root="$DATA/videos" feature_cache="$DATA/features")
  fi
  vllm-i2v train configs/shapes/video.yaml model="$OUT-$one/base" training.output_dir="$OUT-$one/video" "${data[@]}"
done
