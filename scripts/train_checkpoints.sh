#!/usr/bin/env bash
# Build the demo corpora and train every shipped checkpoint.
#   scripts/train_checkpoints.sh [OUT_DIR=checkpoints] [JOBS=2]
# Runs JOBS trainings side by side, one CPU thread each (small models train faster that way than
# one at a time with two threads). Logs go to OUT_DIR/NAME.train.log.
# Environment:
#   EXTRA    options added to every training, e.g. EXTRA="--resume --max-minutes 100" to train long and
#            continue across sessions (the resume state sits beside each checkpoint: keep OUT_DIR under
#            runs/, which git ignores)
#   ONLY     a regular expression: train only the models whose NAME matches (e.g. ONLY=handwriting)
#   HW_VRNN  options of the handwriting VRNNs (default: the ablation winner of docs/RESULTS.md)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-checkpoints}
JOBS=${2:-2}
PY=${PYTHON:-.venv/bin/python}
export EXTRA=${EXTRA:-}
ONLY=${ONLY:-.}
HW_VRNN=${HW_VRNN:---recipe cle --free-bits 0.25}
mkdir -p "$OUT" data
[ -f data/speech-demo/manifest.json ] || "$PY" -m model.prepare speech-demo --out data/speech-demo --size full
[ -f data/handwriting-demo/manifest.json ] || "$PY" -m model.prepare handwriting-demo --out data/handwriting-demo --size full

# modality family output [options of this model]
MODELS="speech rnn gauss
speech rnn gmm
speech vrnn-i gauss
speech vrnn gauss
speech vrnn gmm
handwriting rnn gauss --recipe cle
handwriting rnn gmm --recipe cle
handwriting vrnn-i gauss $HW_VRNN
handwriting vrnn gauss $HW_VRNN
handwriting vrnn gmm $HW_VRNN"

echo "$MODELS" | while read -r m f o rest; do
    if echo "$m-$f-$o" | grep -qE "$ONLY"; then echo "$m $f $o${rest:+ $rest}"; fi
done | xargs -P "$JOBS" -L 1 sh -c '
    m=$0 f=$1 o=$2; shift 2
    name="$m-$f-$o"
    echo "training $name"
    "'"$PY"'" -m model.train --data "data/$m-demo" --preset "$m-demo" --family "$f" --output "$o" \
        --out "'"$OUT"'/$name.safetensors" --threads 1 --no-progress "$@" $EXTRA > "'"$OUT"'/$name.train.log" 2>&1 \
        && echo "done $name" || echo "FAILED $name (see '"$OUT"'/$name.train.log)"
'

# The text model (issue 10) on the corpus that covers its alphabet, with its named styles (model.train writes them)
# and its word model: the lines it makes up for a handwriting request without text, from the unconditional models'
# corpus (model.wordlm). The shipped one was then continued with --init-from (docs/RESULTS.md).
if echo "handwriting-text-vrnn-gmm" | grep -qE "$ONLY"; then
    [ -f data/handwriting-alphabet/manifest.json ] ||
        "$PY" -m model.prepare handwriting-demo --out data/handwriting-alphabet --texts alphabet --size full
    name=handwriting-text-vrnn-gmm
    echo "training $name"
    "$PY" -m model.train --data data/handwriting-alphabet --preset handwriting-demo --condition text --family vrnn \
        --output gmm --mlp-width 128 --batch-size 16 --free-bits 0.25 --point-stride 2 --patience 1000 \
        --eval-every 200 --test-samples 10 --out "$OUT/$name.safetensors" --threads 1 --no-progress $EXTRA \
        > "$OUT/$name.train.log" 2>&1 && echo "done $name" || echo "FAILED $name (see $OUT/$name.train.log)"
    "$PY" -m model.wordlm "$OUT/$name.safetensors" --data data/handwriting-demo
fi
