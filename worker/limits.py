"""Every bound the job functions enforce, in one place; each says why it has its value.

Plain constants, no torch: the API may import them to document or pre-check its inputs.
"""

from __future__ import annotations

# Generated speech: 0.05 s is one 200-sample frame at 8 kHz or more; 20 s keeps one CPU request under a minute.
MIN_DURATION_S = 0.05
MAX_DURATION_S = 20.0

# Generated handwriting: one IAM-OnDB line is about 700 pen steps, so 3000 is a long paragraph line.
MIN_STEPS = 1
MAX_STEPS = 3000

# Text to write (text-conditioned handwriting): lines separated by "\n", each one line of the model (about 700 pen
# steps for 20 characters; model.text reads at most 200 characters, so a primed line's text plus a space plus a
# line fits: 99 + 1 + 100); 10 lines are written as one batch, each at most `steps` (or 40 per character) long.
MAX_TEXT_LINES = 10
MAX_TEXT_LINE_CHARS = 100
MAX_PRIME_TEXT_CHARS = 99
# A named style of a text checkpoint (NAME.styles.json, model.styles): a name of the model-name pattern, shorter.
MAX_STYLE_NAME_CHARS = 64

# Temperature scales output stds; above 5 samples are noise, and 0 would be a division by zero. Any positive value
# up to it samples (model.distributions.sharpen): a tiny or subnormal one gives the T -> 0 limit, never inf or NaN.
MAX_TEMPERATURE = 5.0

# Graves' sampling bias shrinks stds by exp(-bias); beyond 10 that is below the std floor anyway.
MAX_BIAS = 10.0

# SVG stroke width in output pixels; wider strokes than 20 px only blot the line.
MAX_STROKE_WIDTH = 20.0

# Importance samples of the IS estimate (the paper uses 40); 200 bounds the K x T batch of one request.
MIN_NUM_SAMPLES = 1
MAX_NUM_SAMPLES = 200

# Seeds are what torch.Generator.manual_seed takes without wrapping: 0 to 2**63 - 1.
MAX_SEED = 2**63 - 1

# Decoded upload size (score, analyze, prime): a 60 s float32 stereo WAV at 48 kHz is 23 MB.
MAX_UPLOAD_BYTES = 24 * 1024 * 1024

# Uploaded audio longer than 60 s is refused before it is decoded (its header gives the length).
MAX_AUDIO_SECONDS = 60.0

# Uploaded audio sample rates outside 1 kHz..384 kHz are not speech recordings (and make resampling costly).
MIN_AUDIO_SAMPLE_RATE = 1_000
MAX_AUDIO_SAMPLE_RATE = 384_000

# Uploaded handwriting: 20000 pen points is about 30 IAM-OnDB lines, far more than one line to score.
MAX_HANDWRITING_POINTS = 20_000

# Model names are checkpoint file stems; they travel in URLs, headers and logs.
MAX_MODEL_NAME_CHARS = 128
# ... made of letters, digits, '.', '_' and '-', not starting with a punctuation mark (the cache loads no other
# file name, so no other name can exist; the API refuses others with a 422 and documents the pattern).
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"

# An upload's filename only picks the parser by its suffix; longer names are truncated in messages.
MAX_FILENAME_CHARS = 255
