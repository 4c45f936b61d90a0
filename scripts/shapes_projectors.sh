#!/usr/bin/env bash
# Train the rows of the README's science table (frozen versus adapted features), each with the bundled model's
# video-stage recipe (configs/shapes/video.yaml) from the same stage-0 tower, but a shorter schedule (STEPS):
#   meanpool  training-free: the tower as an IMAGE LLM (adapool with one time step, trained on stills only, of every
#             colour-shape pair as the tower's were), which on a video sees its frames mean-pooled over time and has
#             had no video training;
#   adapool, stpool, mlp, qformer   the frozen tower with each projector;
#   adapted   adapool with LoRA on the tower too (its features recomputed every step).
# adapool and adapted are the bundled projector (configs/shapes/model.yaml: 4x3x3 cells, each with its own motion).
#
#   scripts/build_demo_model.sh                       # first: the stage-0 tower and the data
#   scripts/shapes_projectors.sh meanpool adapool stpool mlp qformer adapted
#   python scripts/shapes_table.py ...                # then: the table (its --help shows the full command)
#
# Environment: DATA (data/shapes), OUT (outputs/shapes), STEPS (250). Arguments: which rows (default: all six).
# Each row is resumable: a finished base or run is kept, an interrupted run resumes from its last checkpoint.
set -euo pipefail
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; exit 0; fi
cd "$(dirname "$0")/.."
DATA=${DATA:-data/shapes}
OUT=${OUT:-outputs/shapes}
STEPS=${STEPS:-250}
declare -A PROJECTOR=(
  [meanpool]="projector.grid=[1,3,3];projector.cell_motion=false"  # ; separates overrides
  [adapool]=""
  [adapted]=""
  [stpool]="projector={type: stpool}"
  [mlp]="projector={type: mlp, pool_stride: 2}"
  [qformer]="projector={type: qformer, num_queries: 32, hidden_size: 192, num_heads: 3, intermediate_size: 768}"
)
models=("$@")
[[ ${#models[@]} -gt 0 ]] || models=(meanpool adapool stpool mlp qformer adapted)
for one in "${models[@]}"; do
  [[ -v "PROJECTOR[$one]" ]] || { echo "unknown row $one (known: ${!PROJECTOR[*]})" >&2; exit 2; }
  overrides=()
  [[ -z "${PROJECTOR[$one]}" ]] || IFS=';' read -ra overrides <<< "${PROJECTOR[$one]}"
  [[ -f "$OUT-$one/base/config.json" ]] || vllm-i2v build configs/shapes/model.yaml "$OUT-$one/base" vision="$OUT/stage0/tower" "${overrides[@]}"
  if [[ $one == meanpool ]]; then  # an image LLM: stills with their questions, one per conversation
    [[ -f "$DATA-stills/images.json" ]] || vllm-i2v data shapes "$DATA-stills" --images --every-pair --count 12000 --seed 0 \
      --single-turn
    data=(data.train="$DATA-stills/images.json" data.video_root="$DATA-stills/images" feature_cache="$DATA-stills/features")
  elif [[ $one == adapted ]]; then  # the tower trains: no feature cache
    data=(data.train="$DATA/train.json" data.video_root="$DATA/videos" feature_cache=null trainable.vision=lora)
  else
    data=(data.train="$DATA/train.json" data.video_root="$DATA/videos" feature_cache="$DATA/features")
  fi
  [[ -d "$OUT-$one/video/final" ]] || vllm-i2v train configs/shapes/video.yaml model="$OUT-$one/base" \
    training.output_dir="$OUT-$one/video" training.max_steps="$STEPS" training.save_steps=50 "${data[@]}"
done
