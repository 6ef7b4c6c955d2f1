#!/usr/bin/env bash
# The benchmark behind docs/results.md's verdicts: `--dataset bench` scenes (each model keeps the candidates
# it classifies as their label), the seeds' claim methods on N scenes and the costly ones on the first NSLOW,
# ROAD off (no claim uses it; it is 3/4 of the metrics' time). One chain per model, one thread each, side by
# side; one process per (model, method) under out/bench/, then scripts/claims.py decides the claims.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
OUT=${OUT:-out/bench}
N=${N:-200}
NSLOW=${NSLOW:-60}
FAST=${FAST:-"gradcam integrative fdcam reciprocam"}
SLOW=${SLOW:-"scorecam"}
[ -f .cache/models/efficientnet_lite0/1/model.onnx ] ||
    "$BIN/python" scripts/export_default_model.py --model efficientnet_lite0 --out .cache/models/efficientnet_lite0
run() {  # model-folder n method
    local model=$1 n=$2 method=$3
    local dest="$OUT/$(basename "$model")/$method"
    [ -f "$dest/results.json" ] && return 0
    "$BIN/camserve" evaluate --model "$model" --label-model models/mobilenet_v2 --dataset bench --methods "$method" \
        --n "$n" --out "$dest" --gallery 6 --no-road --threads 1 > "$OUT/$(basename "$model")-$method.log" 2>&1
}
chain() {
    local model=$1
    for method in $FAST; do run "$model" "$N" "$method"; done
    for method in $SLOW; do run "$model" "$NSLOW" "$method"; done
}
mkdir -p "$OUT"
chain models/mobilenet_v2 & first=$!
chain .cache/models/efficientnet_lite0 & second=$!
wait $first $second
"$BIN/python" scripts/claims.py "$OUT" > "$OUT/claims.md"
