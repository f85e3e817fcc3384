"""Defaults of the data layer, each with the reason it has that value.

The sample rate and frame size are the model's (`model.defaults`); they are repeated here by reference only.
"""

from ..defaults import FRAME_SIZE, HANDWRITING_DIM, SAMPLE_RATE

__all__ = ["FRAME_SIZE", "HANDWRITING_DIM", "SAMPLE_RATE"]

# Speech ------------------------------------------------------------------------------------------

# The paper cut Blizzard and Accent into fixed 0.5 s sequences (Section 4): 8000 samples at 16 kHz,
# i.e. 40 frames of 200 samples.
CHUNK_SECONDS = 0.5

# Suffixes searched (case-insensitively, recursively) for audio. TIMIT's `.WAV` files are NIST SPHERE
# inside, which libsndfile reads too.
AUDIO_EXTENSIONS = (".wav", ".flac")

# Handwriting -------------------------------------------------------------------------------------

# IAM-OnDB lineStrokes XML, JSON lists of strokes, and NumPy (T, 3) offset arrays (never pickled).
HANDWRITING_EXTENSIONS = (".xml", ".json", ".npy")

# Pen jumps (between words, back to dot an i, to the next line) are many times larger than the moves
# within a stroke; left alone they dominate the std and squash ordinary moves towards zero (on the
# full handwriting demo: std 23.6 with them, 10.1 for within-stroke moves alone). So dx and dy are
# clipped to +-CLIP_MADS robust stds before the std is taken (and in the data the model sees), the
# robust std being 1.4826 * the median absolute deviation of all dx and dy values of the training split
# (a median that the few jumps cannot move). At 10 the clip was about a letter width and visibly
# glued words together ("Forcareful"); at 30 it is a few letter widths (~445 units on the small demo,
# where letters are ~100 high): word gaps survive, only ~0.1% of values (long back-jumps to dot an i or
# cross a t) are clipped, and the std is 27 instead of 39 unclipped.
HANDWRITING_CLIP_MADS = 30.0

# JSON files that describe a corpus rather than hold a line (the demo corpora's manifest).
METADATA_FILES = ("manifest.json",)

# An online-handwriting file of a line is tens of kilobytes; a larger one is refused before parsing.
MAX_HANDWRITING_FILE_BYTES = 20 * 1024 * 1024

# Splits ------------------------------------------------------------------------------------------

# Train / validation / test fractions when a corpus defines no split of its own: most of the data trains, and 5%
# each still leaves about a hundred or more sequences to validate (early stopping) and test on in the full demos.
SPLIT_FRACTIONS = (0.9, 0.05, 0.05)

# Seed of the split shuffle: fixed, so that every run (and every checkpoint) sees the same split.
SPLIT_SEED = 0
