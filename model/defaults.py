"""Every default of the model library in one place, each with the reason it has that value."""

# Speech: the paper models raw 16 kHz audio as frames of 200 consecutive samples (Section 4).
SAMPLE_RATE = 16_000
FRAME_SIZE = 200

# Handwriting: x_t = (dx, dy, pen), pen = 1 on the last point of each stroke (Graves 2013).
HANDWRITING_DIM = 3

# Mixture outputs use 20 components in the paper (Section 4, "Models").
N_COMPONENTS = 20

# Importance samples for the marginal log-likelihood estimate (Section 5, following Rezende et al.).
NUM_IS_SAMPLES = 40

# Standard deviations are softplus(a) + STD_FLOOR: without a floor a std can reach zero and the
# log-density becomes infinite (a known source of NaN losses in public VRNN code). Every checkpoint
# stores its own floor (ModelConfig.std_floor), so changing this default changes new models only.
STD_FLOOR = 1e-3

# The authors' recipe (jych/nips2015_vrnn on jych/cle), offered by `python -m model.train --recipe cle`
# and by its separate flags:
#   * std = softplus(a) + 1e-4 (their `cons=1e-4` on every softplus layer);
#   * every weight matrix drawn from U(-0.08, 0.08) (cle's InitCell('rand')), the LSTM's recurrent
#     weights orthogonal (InitCell('ortho')), biases zero but 0.6 on the std heads;
#   * each parameter's gradient clipped to norm 5 (cle's GradientClipping(scaler=5));
#   * after every update, each unit's incoming weight vector rescaled to norm <= 1.9365 (cle's
#     WeightNorm: the column norms of their (in, out) matrices, the rows of PyTorch's (out, in)).
CLE_STD_FLOOR = 1e-4
CLE_INIT_RANGE = 0.08
CLE_MAX_COL_NORM = 1.9365

# Gradient-norm clip of training: the authors' 5 (it was 10 here before their recipe was followed).
CLIP_GRAD = 5.0

# Bias of every std head, so that softplus(0.6) ~= 1.04: a freshly built model predicts unit
# scale, which matches data normalised to unit variance (the original Theano code used 0.6).
STD_BIAS_INIT = 0.6

# Output heads start with small uniform weights so that a new model predicts (close to) the
# bias values whatever its input: the first losses are finite and of a sensible size.
HEAD_INIT_RANGE = 0.01

# Correlations of the bivariate Gaussian are tanh(a) * RHO_LIMIT, keeping 1 - rho^2 away from 0.
RHO_LIMIT = 1.0 - 1e-4

# LSTM forget-gate bias: 1 lets gradients flow through time from the first update.
FORGET_BIAS_INIT = 1.0

# The IS estimate runs K copies of each sequence as one batch; above this many rows the batch of
# sequences is split into chunks so that memory stays bounded (K samples of a sequence stay together).
MAX_IS_BATCH = 4096

# Working memory of one chunk of no-grad decoding (the IS estimate, a scored or analysed upload): the
# K x T rows of an importance-sampled score are run a few time steps at a time, and plain no-grad
# decoding a few thousand rows at a time, so that a request's memory does not grow with K x T.
# 256 MiB keeps the decoder's products large enough to run at full speed (speech-vrnn-gmm: about
# 2000 rows of its 20 x 200 mixture per chunk).
NO_GRAD_CHUNK_BYTES = 256 * 2**20

# A model samples with `model.paired`'s products (every row of a batch as it is in a batch of two, a lone row beside
# a zero row) where that pays on the machine at hand: where every product of its sampling step computes a batch of at
# least this many rows in one call with each row's paired bits (probed per layout, dtype, device and thread count:
# `stepper.paired_pays`). Elsewhere a lone row takes PyTorch's one-row kernel and a batch runs row by row
# (`model.rowwise`). Measured (16 rows of 160 steps, one thread): on the Intel Xeon the speech layers keep their
# bits in one product of up to 9-15 rows, and the speech VRNN-Gauss took 96 ms paired against 246 ms row by row
# (one row: 46 against 44 ms); the handwriting VRNN-GMM's 54-wide layers only in pairs, where the zero row would
# cost its lone 700-step request 18%. On the AMD EPYC, MKL's small products keep no row's bits beyond a pair, and
# some not even a pair's (a row's bits depend on its place): paired sampling there cost a lone speech row 90 ms
# against 48 ms and 16 rows 633 ms against 418 ms row by row, so no model sampled paired there. Since then a paired
# stepper on the CPU takes `model.native`'s products where they build (x86-64 with AVX2 + FMA and a C compiler): each
# row's bits independent of the batch by construction, every model pays on every such machine (the AMD EPYC: 16
# speech rows of 160 steps in 133-149 ms against 418 ms row by row), and a lone row needs no zero row.
PAIRED_MIN_ROWS = 4
# Rows of the probe that finds which chunk sizes of a layer's product give every row its paired bits (`model.paired`).
PAIRED_PROBE_ROWS = 16

# Graves' sampling bias of an unconditional handwriting line when none is given (the service's `bias` for a line of a
# model that writes no text, `model.sample` for a handwriting model; a made-up line is text: TEXT_BIAS): every
# handwriting checkpoint measured so far read better to Tesseract at 1 than at 0 (24 lines of 700 steps, seed 1, mean
# word confidence: the shipped VRNN-GMM 18.4 at 0, 20.2 at 1, 18.5 at 2; the recipe ablation's hw-cle-fb 35.3 at 0,
# 46.8 at 1, 46.2 at 2, 35.6 at 3; docs/RESULTS.md), and bias 1 keeps a line's letters from the wild strokes of a
# plain draw. worker/contract.py holds the same number.
HANDWRITING_BIAS = 1.0

# Graves' sampling bias a text model writes with when none is given (the service's `bias` with `text`, `model.sample
# --text`, `model.textquality`): on the shipped text model, Tesseract's mean character error rate on 12 held-out
# texts was 0.42 at bias 0, 0.34 at 1, 0.37 at 1.5, 0.32 at 2, 0.37 at 2.5 and 0.33 at 4 (docs/RESULTS.md's sweep).
# worker/contract.py holds the same number (the API does not import the model package); a test keeps them equal.
TEXT_BIAS = 2.0
