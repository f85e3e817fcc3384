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
#   STAGES   1: after the first trainings, run the continuations the shipped handwriting checkpoints went through
#            (docs/RESULTS.md: whole lines, then three and five times the training writers for the VRNN-GMM, 63
#            more minutes for the VRNN-Gauss, 92 more for the text model), each from the previous stage's weights
#            (--init-from) and replacing them when it ends (its best validation pass, scored on the test split).
#            The shipped runs were stopped by hand at their last improving validation pass; here each runs its
#            minutes and keeps its best pass.
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
# corpus (model.wordlm).
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

# The shipped checkpoints' continuations (STAGES=1): name data-folder minutes [options]
[ "${STAGES:-0}" = 1 ] || exit 0
if echo handwriting-vrnn-gmm | grep -qE "$ONLY"; then  # more writers (the same validation and test lines)
    [ -f data/handwriting-demo-x3/manifest.json ] ||
        "$PY" -m model.prepare handwriting-demo --out data/handwriting-demo-x3 --extra-train-seeds 1 2
    [ -f data/handwriting-demo-x5/manifest.json ] ||
        "$PY" -m model.prepare handwriting-demo --out data/handwriting-demo-x5 --extra-train-seeds 1 2 3 4
fi
LINES="--batch-size 32 --max-len 1300"  # whole lines (the longest demo line has 1208 points)
STAGE_LIST="handwriting-vrnn-gmm handwriting-demo 115 $HW_VRNN $LINES --lr 5e-4
handwriting-vrnn-gmm handwriting-demo-x3 120 $HW_VRNN $LINES --lr 6e-4
handwriting-vrnn-gmm handwriting-demo-x5 150 $HW_VRNN $LINES --lr 6e-4
handwriting-vrnn-gauss handwriting-demo 63 $HW_VRNN
handwriting-text-vrnn-gmm handwriting-alphabet 92 --condition text --mlp-width 128 --batch-size 16 --free-bits 0.25 --point-stride 2 --test-samples 10"
echo "$STAGE_LIST" | while read -r name data minutes rest; do
    echo "$name" | grep -qE "$ONLY" || continue
    [ -f "$OUT/$name.safetensors" ] || { echo "skipping a stage of $name: $OUT/$name.safetensors is missing"; continue; }
    m=${name%%-*} rest_name=${name#*-}
    f=${rest_name%-*} o=${rest_name##*-}
    [ "$f" = text-vrnn ] && f=vrnn
    next="$OUT/$name.next.safetensors"
    echo "continuing $name on $data for $minutes minutes"
    # shellcheck disable=SC2086
    if "$PY" -m model.train --data "data/$data" --preset "$m-demo" --family "$f" --output "$o" $rest \
        --init-from "$OUT/$name.safetensors" --max-minutes "$minutes" --patience 1000 --eval-every 200 \
        --out "$next" --threads 1 --no-progress $EXTRA >> "$OUT/$name.train.log" 2>&1; then
        mv "$next" "$OUT/$name.safetensors" && mv "${next%.safetensors}.json" "$OUT/$name.json"
        rm -f "${next%.safetensors}".*
        echo "done: a stage of $name"
    else
        echo "FAILED: a stage of $name (see $OUT/$name.train.log)"
    fi
done
