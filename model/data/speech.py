"""Speech: audio files -> 16 kHz mono float32 -> frames of 200 samples (x_t in R^200).

    wave = load_audio("a.flac")                     # (N,) float32 at 16 kHz, in [-1, 1] (about)
    x = frames_from_audio(wave)                     # (N // 200, 200)
    corpus = load_speech_corpus("TIMIT/")           # split, chunked into 0.5 s, normalised

Other rates are resampled with a polyphase filter (scipy.signal.resample_poly), stereo is averaged.
A trailing part shorter than a frame (or a chunk, when chunking) is dropped.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from . import defaults
from .corpus import Corpus, find_files, report_skipped, split_items
from .errors import DataError
from .normalise import fit_speech_stats


def resample(wave: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Band-limited resampling of a 1-D signal by the rational factor to_rate / from_rate."""
    if from_rate == to_rate:
        return wave
    if from_rate <= 0 or to_rate <= 0:
        raise DataError(f"sample rates must be positive, got {from_rate} -> {to_rate}")
    from scipy.signal import resample_poly

    g = math.gcd(int(from_rate), int(to_rate))
    return resample_poly(wave, int(to_rate) // g, int(from_rate) // g).astype(np.float32)


def load_audio(
    source: str | Path | bytes | BinaryIO, sample_rate: int = defaults.SAMPLE_RATE, name: str | None = None
) -> np.ndarray:
    """Read WAV/FLAC (or anything libsndfile reads, e.g. TIMIT's NIST SPHERE) -> (N,) float32 mono at
    `sample_rate`. `source`: a path, the file's bytes, or a binary file object. `name` labels errors."""
    import soundfile as sf

    label = name or (str(source) if isinstance(source, str | Path) else "audio data")
    if isinstance(source, bytes | bytearray):
        source = io.BytesIO(source)
    try:
        data, rate = sf.read(source, dtype="float32", always_2d=True)
    except (RuntimeError, OSError, ValueError, TypeError, EOFError) as e:
        raise DataError(f"{label}: not a readable audio file ({str(e).strip() or type(e).__name__})") from None
    if data.size == 0:
        raise DataError(f"{label}: contains no audio samples")
    wave = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(wave).all():
        raise DataError(f"{label}: contains non-finite samples (NaN or inf)")
    return np.ascontiguousarray(resample(wave, rate, sample_rate), dtype=np.float32)


def frames_from_audio(wave: np.ndarray, frame_size: int = defaults.FRAME_SIZE) -> np.ndarray:
    """(N,) -> (N // frame_size, frame_size): consecutive non-overlapping frames, remainder dropped."""
    wave = np.asarray(wave)
    if wave.ndim != 1:
        raise DataError(f"expected a 1-D waveform, got shape {wave.shape}")
    n = len(wave) // frame_size
    return wave[: n * frame_size].reshape(n, frame_size).astype(np.float32, copy=False)


def chunk_audio(wave: np.ndarray, chunk_samples: int, frame_size: int = defaults.FRAME_SIZE) -> list[np.ndarray]:
    """(N,) -> list of (chunk_samples // frame_size, frame_size): non-overlapping fixed-length chunks,
    as the paper's 0.5 s sequences; the last, shorter part is dropped."""
    if chunk_samples <= 0 or chunk_samples % frame_size:
        raise DataError(f"chunk length ({chunk_samples} samples) must be a positive multiple of {frame_size}")
    n = len(wave) // chunk_samples
    return [frames_from_audio(wave[i * chunk_samples : (i + 1) * chunk_samples], frame_size) for i in range(n)]


def load_speech_file(
    source: str | Path | bytes | BinaryIO,
    sample_rate: int = defaults.SAMPLE_RATE,
    frame_size: int = defaults.FRAME_SIZE,
    name: str | None = None,
) -> np.ndarray:
    """One audio file -> raw frames (T, frame_size) (not normalised: see `NormStats.preprocess`)."""
    frames = frames_from_audio(load_audio(source, sample_rate, name), frame_size)
    if len(frames) == 0:
        label = name or (str(source) if isinstance(source, str | Path) else "audio data")
        raise DataError(f"{label}: shorter than one frame ({frame_size} samples at {sample_rate} Hz)")
    return frames


def timit_split_dirs(root: str | Path) -> tuple[Path, Path] | None:
    """(TRAIN dir, TEST dir) when `root` holds both (any case, as TIMIT's layout), else None."""
    root = Path(root)
    if not root.is_dir():
        return None
    subdirs = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    if "train" in subdirs and "test" in subdirs:
        return subdirs["train"], subdirs["test"]
    return None


def load_speech_corpus(
    root: str | Path,
    chunk_seconds: float | None = defaults.CHUNK_SECONDS,
    sample_rate: int = defaults.SAMPLE_RATE,
    frame_size: int = defaults.FRAME_SIZE,
    seed: int = defaults.SPLIT_SEED,
    fractions: tuple[float, float, float] = defaults.SPLIT_FRACTIONS,
    max_files: int | None = None,
) -> Corpus:
    """A folder of WAV/FLAC files (recursive) -> normalised, split `Corpus` of frame sequences.

    Splits are made over files (never over chunks of one file, which would leak a recording into two
    splits): TIMIT's TRAIN/ and TEST/ when present (validation = a seeded share of TRAIN's files),
    otherwise `fractions` of the shuffled files. chunk_seconds=None keeps each file whole.
    Unreadable files (or ones shorter than a chunk) are skipped with one warning; an error is raised
    if no file is usable. `max_files` keeps the first files of the sorted list (quick experiments)."""
    root = Path(root)
    chunk_samples = None
    if chunk_seconds is not None:
        chunk_samples = round(chunk_seconds * sample_rate)
        if chunk_samples <= 0 or chunk_samples % frame_size:
            raise DataError(
                f"chunk_seconds={chunk_seconds} gives {chunk_samples} samples at {sample_rate} Hz, "
                f"which is not a positive multiple of the frame size {frame_size}"
            )

    timit = timit_split_dirs(root)
    if timit is not None:
        train_dir, test_dir = timit
        train_files = find_files(train_dir, defaults.AUDIO_EXTENSIONS)[:max_files]
        test_files = find_files(test_dir, defaults.AUDIO_EXTENSIONS)[:max_files]
        valid_share = fractions[1] / (fractions[0] + fractions[1])
        train_files, valid_files, _ = split_items(train_files, (1 - valid_share, valid_share, 0.0), seed)
        splits = {"train": train_files, "valid": valid_files, "test": test_files}
    else:
        files = find_files(root, defaults.AUDIO_EXTENSIONS)[:max_files]
        splits = dict(zip(("train", "valid", "test"), split_items(files, fractions, seed), strict=True))

    base = root if root.is_dir() else root.parent
    raw: dict[str, list[np.ndarray]] = {}
    names: dict[str, list[str]] = {}
    skipped: list[tuple[str, str]] = []
    for split, files in splits.items():
        raw[split], names[split] = [], []
        for path in files:
            rel = str(path.relative_to(base))
            try:
                wave = load_audio(path, sample_rate, name=rel)
            except DataError as e:
                skipped.append((rel, str(e).removeprefix(f"{rel}: ")))
                continue
            if chunk_samples is None:
                seqs = [frames_from_audio(wave, frame_size)]
                seqs, labels = ([], []) if len(seqs[0]) == 0 else (seqs, [rel])
            else:
                seqs = chunk_audio(wave, chunk_samples, frame_size)
                labels = [f"{rel}#{i}" for i in range(len(seqs))]
            if not seqs:
                need = chunk_samples or frame_size
                skipped.append((rel, f"shorter than {need} samples ({need / sample_rate:g} s)"))
                continue
            raw[split].extend(seqs)
            names[split].extend(labels)

    total = sum(len(f) for f in splits.values())
    report_skipped(skipped, total, root)
    if not any(raw.values()):
        raise DataError(f"{root}: none of the {total} audio files could be used ({skipped[0][0]}: {skipped[0][1]})")
    if not raw["train"]:
        raise DataError(f"{root}: no usable audio in the training split")

    stats = fit_speech_stats(raw["train"], frame_size)
    data: dict[str, Any] = {s: [stats.normalise(x) for x in seqs] for s, seqs in raw.items()}
    return Corpus(
        modality="speech",
        root=str(root),
        names=names,
        stats=stats,
        skipped=skipped,
        predefined_split=timit is not None,
        **data,
    )
