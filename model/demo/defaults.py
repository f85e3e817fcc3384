"""Defaults of the demo corpora (`python -m model.prepare`), each with the reason it has that value."""

# Speech, one synthetic speaker (like Blizzard's single reader). "small" takes a few seconds (tests).
# "full": 300 sentences of ~3.5 s are ~18 minutes of audio, ~2000 chunks of 0.5 s (~1800 for training),
# synthesised in under a minute on 2 cores. Seven models that share about an hour on two CPU cores get
# ~8 minutes each: a few thousand updates of 32 chunks, so each training chunk is seen some tens of
# times, enough to learn from and not so few that a model memorises the corpus early.
SPEECH_DEMO_UTTERANCES = {"small": 6, "full": 300}

# Handwriting: lines of 2-4 words, each written by one of a set of random "writers".
# "full": 3000 lines (~550 pen points each, close to IAM-OnDB's ~700 per line) by 60 writers, 50 lines
# each: enough lines per writer for writer style to be a factor a model can pick up; 1.6 M points,
# about a fifth of IAM-OnDB, written in ~10 s. Training crops lines to a few hundred steps.
HANDWRITING_DEMO_LINES = {"small": 24, "full": 3000}
HANDWRITING_DEMO_WRITERS = {"small": 4, "full": 60}

# Seed of the demo corpora when --seed is not given.
DEMO_SEED = 0

# The festival voice the speech demo uses (Debian package festvox-us-slt-hts): one female US speaker.
FESTIVAL_VOICE = "cmu_us_slt_arctic_hts"
