"""Normalisation statistics: one scalar mean and std from the training split, stored in checkpoints.

Speech: every sample becomes (x - mean) / std. Handwriting: dx and dy are clipped to +-clip (see
`defaults.HANDWRITING_CLIP_MADS`) and divided by std; the mean is 0 and the pen bit is left as it is.

Log-likelihoods computed on normalised data convert to the raw data space by adding the log-Jacobian
of the normalisation, per frame: log p_raw(x) = log p_norm(y) - D * log(std), with D = 200 (every
sample of a speech frame) or D = 2 (dx, dy of a handwriting frame).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from . import defaults
from .errors import DataError

MODALITIES = ("speech", "handwriting")


@dataclass(frozen=True)
class NormStats:
    """Scalar normalisation of one modality; JSON-safe through `to_dict` / `from_dict`.

    modality:   "speech" or "handwriting".
    mean, std:  raw-space scalars (handwriting: mean is 0).
    frame_size: D of x_t (200 for speech frames, 3 for (dx, dy, pen)).
    clip:       handwriting only: |dx| and |dy| (raw units) are clipped to this before normalising.
    point_stride: handwriting only: the model sees every `point_stride`-th pen point of each stroke (and each
                stroke's first and last), `subsample_points`; 1 (the default, the paper's): every point. A model
                trained on thinned lines reads uploads thinned the same way, and its likelihoods are those of the
                thinned line (fewer frames).
    """

    modality: str
    mean: float
    std: float
    frame_size: int
    clip: float | None = None
    point_stride: int = 1

    def __post_init__(self) -> None:
        problems = []
        if self.modality not in MODALITIES:
            problems.append(f"modality must be one of {MODALITIES}, got {self.modality!r}")
        if not (isinstance(self.std, int | float) and math.isfinite(self.std) and self.std > 0):
            problems.append(f"std must be a positive finite number, got {self.std!r}")
        if not (isinstance(self.mean, int | float) and math.isfinite(self.mean)):
            problems.append(f"mean must be a finite number, got {self.mean!r}")
        if not isinstance(self.frame_size, int) or isinstance(self.frame_size, bool) or self.frame_size < 1:
            problems.append(f"frame_size must be a positive integer, got {self.frame_size!r}")
        if self.modality == "handwriting":
            if self.frame_size != defaults.HANDWRITING_DIM:
                problems.append(f"handwriting frames are (dx, dy, pen): frame_size must be 3, got {self.frame_size}")
            if self.mean != 0:
                problems.append(f"handwriting offsets are only scaled: mean must be 0, got {self.mean}")
            if self.clip is not None and not (math.isfinite(self.clip) and self.clip > 0):
                problems.append(f"clip must be a positive finite number or null, got {self.clip!r}")
            if not isinstance(self.point_stride, int) or isinstance(self.point_stride, bool) or self.point_stride < 1:
                problems.append(f"point_stride must be a positive integer, got {self.point_stride!r}")
        elif self.clip is not None or self.point_stride != 1:
            problems.append("clip and point_stride apply to handwriting only")
        if problems:
            raise DataError("invalid normalisation stats: " + "; ".join(problems))

    # Serialisation ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.point_stride == 1:  # every point: the stats of the paper's models read as before
            del out["point_stride"]
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NormStats:
        if not isinstance(d, dict):
            raise DataError(f"normalisation stats must be a JSON object, got {type(d).__name__}")
        known = {"modality", "mean", "std", "frame_size", "clip", "point_stride"}
        unknown = sorted(set(d) - known)
        missing = sorted({"modality", "mean", "std", "frame_size"} - set(d))
        if unknown or missing:
            raise DataError(f"normalisation stats: unknown keys {unknown}, missing keys {missing}")
        return cls(**d)

    # The maps -----------------------------------------------------------------------------------

    @property
    def scaled_dims(self) -> int:
        """How many coordinates of a frame are divided by std: D for speech, 2 (dx, dy) for handwriting."""
        return self.frame_size if self.modality == "speech" else 2

    @property
    def log_jacobian_per_frame(self) -> float:
        """log |d normalised / d raw| of one frame, nats: add it per frame to turn a normalised-space
        log-likelihood into a raw-space one (-D * log(std))."""
        return -self.scaled_dims * math.log(self.std)

    def to_raw_log_likelihood(self, log_likelihood: Any, frames: Any) -> Any:
        """Normalised-space log-likelihood (nats, per sequence) -> raw space; `frames` = valid frames of
        each sequence (number, array or tensor, broadcast against `log_likelihood`)."""
        return log_likelihood + frames * self.log_jacobian_per_frame

    def _check(self, x: Any) -> None:
        if x.shape[-1] != self.frame_size:
            raise DataError(f"expected frames of size {self.frame_size} in the last axis, got shape {tuple(x.shape)}")

    def normalise(self, x: Any) -> Any:
        """Raw (..., D) array or tensor -> normalised copy (same type; NumPy input becomes float32).
        Exactly invertible by `denormalise`; handwriting clipping is the separate `clip_offsets`."""
        self._check(x)
        if self.modality == "speech":
            return (_as_float(x) - self.mean) / self.std
        y = _copy(x)
        y[..., :2] = y[..., :2] / self.std
        return y

    def denormalise(self, y: Any) -> Any:
        """Inverse of `normalise`."""
        self._check(y)
        if self.modality == "speech":
            return _as_float(y) * self.std + self.mean
        x = _copy(y)
        x[..., :2] = x[..., :2] * self.std
        return x

    def clip_offsets(self, x: Any) -> Any:
        """Handwriting: a copy with dx, dy clipped to +-clip (raw units); speech (or clip None): x as is."""
        self._check(x)
        if self.modality != "handwriting" or self.clip is None:
            return x
        y = _copy(x)
        y[..., :2] = y[..., :2].clip(-self.clip, self.clip)
        return y

    def preprocess(self, x: Any) -> Any:
        """What training data went through: `subsample_points` (handwriting with point_stride > 1), `clip_offsets`,
        then `normalise`. Use it on raw data to score or to prime with."""
        if self.point_stride != 1:
            self._check(x)
            x = subsample_points(x, self.point_stride)
        return self.normalise(self.clip_offsets(x))


def subsample_points(x: Any, stride: int) -> Any:
    """Handwriting (T, 3) offsets (dx, dy, pen; pen = 1 on a stroke's last point) -> the same line through every
    `stride`-th point of each stroke, each stroke's first and last point always kept (so pen lifts, where strokes
    begin and end, survive); offsets recomputed between the kept points. NumPy in, NumPy out; a tensor comes back
    as a tensor of its dtype. stride 1: x itself."""
    if stride == 1 or len(x) == 0:
        return x
    tensor = not isinstance(x, np.ndarray) and hasattr(x, "detach")
    a = x.detach().cpu().numpy() if tensor else np.asarray(x)
    pen = a[:, 2] > 0.5
    starts = np.r_[True, pen[:-1]]  # a point after a pen lift begins a stroke
    first = np.flatnonzero(starts)
    within = np.arange(len(a)) - first[np.cumsum(starts) - 1]  # index of each point inside its stroke
    last = pen.copy()
    last[-1] = True
    keep = (within % stride == 0) | last
    xy = np.cumsum(a[:, :2].astype(np.float64), axis=0)[keep]
    out = np.empty((len(xy), a.shape[1]), dtype=a.dtype)
    out[0, :2] = xy[0]
    out[1:, :2] = np.diff(xy, axis=0)
    out[:, 2:] = a[keep, 2:]
    if tensor:
        import torch

        return torch.as_tensor(out, dtype=x.dtype, device=x.device)
    return out


def _as_float(x: Any) -> Any:
    if isinstance(x, np.ndarray) or not hasattr(x, "is_floating_point"):
        x = np.asarray(x)
        return x if x.dtype.kind == "f" else x.astype(np.float32)
    return x if x.is_floating_point() else x.float()


def _copy(x: Any) -> Any:
    x = _as_float(x)
    return x.copy() if isinstance(x, np.ndarray) else x.clone()


# Fitting -----------------------------------------------------------------------------------------


def fit_speech_stats(frames: list[np.ndarray], frame_size: int = defaults.FRAME_SIZE) -> NormStats:
    """One mean and std over every sample of the given (training) sequences of shape (T, frame_size)."""
    if not frames:
        raise DataError("cannot compute normalisation stats: the training split is empty")
    n = sum(f.size for f in frames)
    # Two passes in float64: a one-pass sum of squares loses precision on millions of samples.
    mean = sum(float(np.sum(f, dtype=np.float64)) for f in frames) / n
    var = sum(float(np.sum((f.astype(np.float64) - mean) ** 2)) for f in frames) / n
    std = math.sqrt(var)
    if not std > 0:
        raise DataError("cannot normalise: every training sample has the same value (silent audio?)")
    return NormStats("speech", mean=mean, std=std, frame_size=frame_size)


def robust_offset_scale(sequences: list[np.ndarray]) -> float:
    """1.4826 * median absolute deviation of all dx, dy values: a std estimate that jumps do not move."""
    d = np.concatenate([s[:, :2].reshape(-1) for s in sequences]).astype(np.float64)
    return float(1.4826 * np.median(np.abs(d - np.median(d))))


def fit_handwriting_stats(
    sequences: list[np.ndarray], clip_mads: float | None = defaults.HANDWRITING_CLIP_MADS, point_stride: int = 1
) -> NormStats:
    """Std of dx, dy over the given (training) raw (T, 3) sequences, thinned to every `point_stride`-th point
    (`subsample_points`), after clipping them to +-clip_mads robust stds (`robust_offset_scale`); clip_mads=None
    clips nothing."""
    if not sequences:
        raise DataError("cannot compute normalisation stats: the training split is empty")
    sequences = [subsample_points(s, point_stride) for s in sequences]
    clip = None
    if clip_mads is not None:
        scale = robust_offset_scale(sequences)
        if scale > 0:
            clip = float(clip_mads * scale)
    d = np.concatenate([s[:, :2].reshape(-1) for s in sequences]).astype(np.float64)
    if clip is not None:
        d = np.clip(d, -clip, clip)
    # The std of dx and dy pooled: one scale for both axes keeps the letters' shape (aspect ratio, slant). The
    # offsets are not centred, so that a zero offset stays zero (the pen at rest) and the sign of a move survives.
    std = float(np.std(d))
    if not std > 0:
        raise DataError("cannot normalise: every training offset is zero")
    return NormStats(
        "handwriting", mean=0.0, std=std, frame_size=defaults.HANDWRITING_DIM, clip=clip, point_stride=point_stride
    )
