#!/usr/bin/env bash
# Build the demo corpora and train every shipped checkpoint (about an hour on 2 CPU cores).
#   scripts/train_checkpoints.sh [OUT_DIR=checkpoints] [JOBS=2]
# Runs JOBS trainings side by side, one CPU thread each (small models train faster that way than
# one at a time with two threads). Logs go to OUT_DIR/NAME.train.log.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-checkpoints}
JOBS=${2:-2}
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$OUT" data
[ -f data/speech-demo/manifest.json ] || "$PY" -m model.prepare speech-demo --out data/speech-demo --size full
[ -f data/handwriting-demo/manifest.json ] || "$PY" -m model.prepare handwriting-demo --out data/handwriting-demo --size full

# modality family output
MODELS="speech rnn gauss
speech rnn gmm
speech vrnn-i gauss
speech vrnn gauss
speech vrnn gmm
handwriting rnn gauss
handwriting rnn gmm
handwriting vrnn gmm"

echo "$MODELS" | xargs -P "$JOBS" -L 1 sh -c '
    name="$0-$1-$2"
    echo "training $name"
    "'"$PY"'" -m model.train --data "data/$0-demo" --preset "$0-demo" --family "$1" --output "$2" \
        --out "'"$OUT"'/$name.safetensors" --threads 1 --no-progress > "'"$OUT"'/$name.train.log" 2>&1 \
        && echo "done $name" || echo "FAILED $name (see '"$OUT"'/$name.train.log)"
'
