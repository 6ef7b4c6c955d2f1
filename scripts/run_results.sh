#!/usr/bin/env bash
# Runs the evaluation behind docs/results.md: every method on the real MobileNetV2 (bundled) and
# EfficientNet-Lite0 (exported by scripts/export_default_model.py), on synthetic scenes labelled by
# MobileNetV2's top-1 on each object alone. One process per (model, method) under out/results/;
# scripts/results_table.py then merges them. Hours of CPU: the Score-CAM family runs on fewer images.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
OUT=${OUT:-out/results}
FAST="randomcam cam gradcam gradcam++ xgradcam hirescam gradcam-elementwise layercam eigencam eigengradcam fullgrad
      smoothgradcam++ integrative ablationcam groupcam reciprocam fdcam"
[ -f .cache/models/efficientnet_lite0/1/model.onnx ] ||
    "$BIN/python" scripts/export_default_model.py --model efficientnet_lite0 --out .cache/models/efficientnet_lite0
run() {  # model-folder n method [extra args...]
    local model=$1 n=$2 method=$3; shift 3
    local dest="$OUT/$(basename "$model")/$method"
    [ -f "$dest/results.json" ] && return 0
    "$BIN/camserve" evaluate --model "$model" --label-model models/mobilenet_v2 --methods "$method" --n "$n" \
        --out "$dest" --gallery 6 "$@"
}
for model in models/mobilenet_v2 .cache/models/efficientnet_lite0; do
    for method in $FAST; do run "$model" 24 "$method" --sanity 5 --sanity-images 4; done
done
for model in models/mobilenet_v2 .cache/models/efficientnet_lite0; do
    run "$model" 6 scorecam
    run "$model" 6 rise
    run "$model" 3 sscam --option sscam.samples=2
    run "$model" 3 iscam --option iscam.samples=2
done
"$BIN/python" scripts/results_table.py "$OUT" docs/results-table.md
