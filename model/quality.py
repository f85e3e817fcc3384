"""Judging samples by what they are: legibility, style consistency and noisiness, measured on files.

    python -m model.quality handwriting samples/line_*.json --png-dir /tmp/renders   # Tesseract, slant, size
    python -m model.quality handwriting data/handwriting-demo/lineStrokes/*.xml      # the same on real lines
    python -m model.quality speech samples/speech_*.wav --reference data/speech-demo  # ZCR, energy above 4 kHz

Handwriting (JSON offsets from `python -m model.sample --out X.json`, IAM-OnDB XML or JSON strokes):

- **Legibility**: each line is drawn black on white (`render_png`: strokes scaled to a fixed ink height,
  round pens, a margin) and read by Tesseract as one text line (`tesseract IMG - --psm 13 tsv`); the score of a
  line is the mean confidence (0-100) of the words it read, 0 when it read none. Tesseract's confidence is
  what the project's issues quote as "mean word confidence"; it is a noisy judge of one line (a clean line of
  script read at 53, the same line with jittered points at 61 and 14), so compare means over many lines.
  Where the text is known (`--texts`, for text-conditioned samples), the character error rate of the reading
  (`char_error_rate`, edit distance over the text's length, case and spacing folded) is the sharper measure.
- **Style**: the line is cut into windows of `WINDOW_POINTS` pen points; in each, the *slant* (the length-weighted
  mean angle from vertical of the pen-down segments that run more up-down than sideways, in degrees, positive
  leaning right) and the *size* (the median height of the up and down strokes: the vertical distance between
  consecutive turning points of the pen-down trace, ignoring wiggles under a quarter of the window's ink
  height; in running script that is mostly the x-height). `style_consistency` compares the
  spread of those values within a line with the spread of the lines' means across lines: a writer with a style
  of their own has within/across ratios well under 1.

Speech (WAV/FLAC): the zero-crossing rate (crossings per sample) and the fraction of the energy above 4 kHz,
per file, against real speech of a corpus (`--reference`): white noise has a ZCR of 0.5 and 50 % of its
energy above 4 kHz at 16 kHz; voiced speech far less of both.

Exit status: 0 done, 2 bad arguments or unreadable files, 1 Tesseract missing (for handwriting).
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import math
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .data import defaults as data_defaults
from .data.handwriting import load_handwriting_file, offsets_to_strokes, read_handwriting
from .data.speech import load_audio
from .defaults import SAMPLE_RATE

WINDOW_POINTS = 100
INK_HEIGHT_PX = 64  # the 5-95 % height of a line's ink after scaling: Tesseract's sweet spot is 30-100 px letters
MARGIN_PX = 24
MAX_WIDTH_PX = 6000
HF_CUTOFF_HZ = 4000.0
TESSERACT_TIMEOUT_S = 60


# Handwriting: rendering and legibility -----------------------------------------------------------------------


def render_png(offsets: np.ndarray, ink_height_px: int = INK_HEIGHT_PX, pen_px: int | None = None) -> bytes:
    """Offsets (T, 3) [dx, dy, pen] (y up, pen = 1 ends a stroke) drawn black on white as PNG bytes, scaled so that
    the 5-95 % spread of the line's heights is `ink_height_px` (a line of any model or corpus reads at one size)."""
    from PIL import Image, ImageDraw

    strokes = offsets_to_strokes(np.asarray(offsets, dtype=np.float64)) if len(offsets) else []
    points = np.concatenate(strokes) if strokes else np.zeros((1, 2))
    lo, hi = np.percentile(points[:, 1], [5, 95])
    scale = ink_height_px / max(hi - lo, 1e-6)
    x0, y1 = points[:, 0].min(), points[:, 1].max()
    width = (points[:, 0].max() - x0) * scale
    if width > MAX_WIDTH_PX - 2 * MARGIN_PX:  # a runaway line: shrink it to fit rather than allocate gigapixels
        scale *= (MAX_WIDTH_PX - 2 * MARGIN_PX) / width
    w = math.ceil((points[:, 0].max() - x0) * scale) + 2 * MARGIN_PX
    h = math.ceil((y1 - points[:, 1].min()) * scale) + 2 * MARGIN_PX
    h = min(h, MAX_WIDTH_PX)
    pen = pen_px or max(2, round(ink_height_px / 16))
    image = Image.new("L", (max(w, 1), max(h, 1)), 255)
    draw = ImageDraw.Draw(image)
    for s in strokes:
        xy = [((x - x0) * scale + MARGIN_PX, (y1 - y) * scale + MARGIN_PX) for x, y in s]
        if len(xy) == 1:
            (x, y) = xy[0]
            draw.ellipse([x - pen / 2, y - pen / 2, x + pen / 2, y + pen / 2], fill=0)
        else:
            draw.line(xy, fill=0, width=pen, joint="curve")
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class Reading:
    text: str
    confidence: float  # mean word confidence, 0-100; 0 when no word was read
    words: int
    letters: int  # alphabetic characters read


def tesseract_available() -> bool:
    return shutil.which("tesseract") is not None


def read_png(png: bytes) -> Reading:
    """Tesseract's reading of one text line (`--psm 13`, raw line): the words and their mean confidence."""
    with tempfile.TemporaryDirectory(prefix="vrnn-ocr-") as tmp:
        path = Path(tmp) / "line.png"
        path.write_bytes(png)
        out = subprocess.run(
            ["tesseract", str(path), "-", "--psm", "13", "tsv"],
            capture_output=True,
            text=True,
            timeout=TESSERACT_TIMEOUT_S,
            check=True,
        ).stdout
    words, confs = [], []
    for row in out.splitlines()[1:]:
        cells = row.split("\t")
        if len(cells) == 12 and cells[0] == "5" and cells[11].strip():
            words.append(cells[11].strip())
            confs.append(max(0.0, float(cells[10])))
    text = " ".join(words)
    return Reading(text, float(np.mean(confs)) if confs else 0.0, len(words), sum(c.isalpha() for c in text))


def _fold(text: str) -> str:
    return " ".join(text.lower().split())


def char_error_rate(read: str, truth: str) -> float:
    """Levenshtein distance between the reading and the truth over the truth's length (case and runs of
    white space folded): 0 for a perfect reading, 1 for nothing read; above 1 when much more is read."""
    a, b = _fold(read), _fold(truth)
    if not b:
        return float(len(a) > 0)
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1] / len(b)


# Handwriting: style -------------------------------------------------------------------------------------------


def style_windows(offsets: np.ndarray, window: int = WINDOW_POINTS) -> list[tuple[float, float]]:
    """(slant in degrees, size) of each window of `window` points that has enough pen-down ink to measure."""
    off = np.asarray(offsets, dtype=np.float64)
    xy = np.cumsum(off[:, :2], axis=0)
    out = []
    for start in range(0, len(off) - window // 2, window):
        seg = off[start : start + window]
        pos = xy[start : start + window]
        # A segment is pen-down unless the previous point ended a stroke.
        down = np.ones(len(seg), dtype=bool)
        down[1:] = seg[:-1, 2] < 0.5
        if start > 0:
            down[0] = off[start - 1, 2] < 0.5
        d = seg[down, :2]
        length = np.hypot(d[:, 0], d[:, 1])
        upright = (np.abs(d[:, 1]) > np.abs(d[:, 0])) & (length > 0)
        if upright.sum() < 5:
            continue
        du = d[upright] * np.sign(d[upright, 1])[:, None]  # point every upright segment upwards
        slant = float(np.degrees(np.average(np.arctan2(du[:, 0], du[:, 1]), weights=length[upright])))
        strokes = np.split(pos[:, 1], np.flatnonzero(seg[:-1, 2] >= 0.5) + 1)
        lo, hi = np.percentile(pos[:, 1], [5, 95])
        swings = [d for s in strokes for d in _swings(s, 0.25 * (hi - lo))]
        if swings:
            out.append((slant, float(np.median(swings))))
    return out


def line_style(offsets: np.ndarray, window: int = WINDOW_POINTS) -> tuple[float, float] | None:
    """A line's (slant, size): the medians over its `style_windows`; None when no window of it can be measured."""
    windows = style_windows(offsets, window)
    if not windows:
        return None
    a = np.asarray(windows, dtype=np.float64)
    return float(np.median(a[:, 0])), float(np.median(a[:, 1]))


def _swings(y: np.ndarray, threshold: float) -> list[float]:
    """Vertical distances between consecutive turning points of `y`, a turn counting once the trace has come
    back at least `threshold` from the extreme (hysteresis, so the pen's jitter makes no turns)."""
    if len(y) < 2 or threshold <= 0:
        return []
    turns: list[float] = []
    lo = hi = extreme = float(y[0])
    direction = 0
    for v in map(float, y[1:]):
        if direction == 0:
            lo, hi = min(lo, v), max(hi, v)
            if hi - lo >= threshold:
                direction = 1 if v == hi else -1
                turns.append(lo if direction == 1 else hi)
                extreme = v
        elif direction * (v - extreme) > 0:
            extreme = v
        elif abs(v - extreme) >= threshold:
            turns.append(extreme)
            direction, extreme = -direction, v
    if direction:
        turns.append(extreme)
    return [abs(b - a) for a, b in itertools.pairwise(turns)]


@dataclass
class StyleConsistency:
    lines: int
    slant_within_sd: float  # mean over lines of the sd of window slants within the line
    slant_across_sd: float  # sd over lines of their mean slant
    size_within_cv: float  # the same for size, relative to each line's mean size (scale-free)
    size_across_cv: float

    @property
    def slant_ratio(self) -> float:
        return self.slant_within_sd / self.slant_across_sd if self.slant_across_sd else math.inf

    @property
    def size_ratio(self) -> float:
        return self.size_within_cv / self.size_across_cv if self.size_across_cv else math.inf


def style_consistency(lines: list[np.ndarray], window: int = WINDOW_POINTS) -> StyleConsistency:
    """Within-line against across-line spread of slant and size (see the module's docstring)."""
    per_line = [np.array(w) for w in (style_windows(o, window) for o in lines) if len(w) >= 2]
    if len(per_line) < 2:
        raise ValueError("style consistency needs at least two lines with two measurable windows each")
    slant_means = np.array([w[:, 0].mean() for w in per_line])
    size_means = np.array([w[:, 1].mean() for w in per_line])
    return StyleConsistency(
        lines=len(per_line),
        slant_within_sd=float(np.mean([w[:, 0].std() for w in per_line])),
        slant_across_sd=float(slant_means.std()),
        size_within_cv=float(np.mean([w[:, 1].std() / w[:, 1].mean() for w in per_line])),
        size_across_cv=float(size_means.std() / size_means.mean()),
    )


# Speech ---------------------------------------------------------------------------------------------------------


def zero_crossing_rate(wave: np.ndarray) -> float:
    """Sign changes per sample (0 for silence; 0.5 for white noise; 2f/rate for a sine of frequency f)."""
    s = np.signbit(np.asarray(wave, dtype=np.float64))
    return float(np.count_nonzero(s[1:] != s[:-1]) / max(len(s) - 1, 1))


def high_frequency_fraction(wave: np.ndarray, sample_rate: int, cutoff_hz: float = HF_CUTOFF_HZ) -> float:
    """The fraction of the signal's energy above `cutoff_hz` (0 for silence)."""
    w = np.asarray(wave, dtype=np.float64)
    power = np.abs(np.fft.rfft(w - w.mean())) ** 2
    freqs = np.fft.rfftfreq(len(w), 1.0 / sample_rate)
    total = power.sum()
    return float(power[freqs > cutoff_hz].sum() / total) if total > 0 else 0.0


# Command line ---------------------------------------------------------------------------------------------------


def _summary(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), "sd": float(a.std()), "min": float(a.min()), "max": float(a.max())}


def read_line(path: Path) -> tuple[np.ndarray, str | None]:
    """A file's line of handwriting and, where the file says it, the text written in it: the JSON of a text model's
    sample (`model.sample --text/--invent --out X.json`, the service's format=json with text: `texts` and a list of
    `offsets` per line) holds both, one line per file; any other file is read as an upload is (no text)."""
    if path.suffix.lower() == ".json" and path.stat().st_size <= data_defaults.MAX_HANDWRITING_FILE_BYTES:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            doc = None  # the reader below says what is wrong
        if isinstance(doc, dict) and isinstance(doc.get("texts"), list) and isinstance(doc.get("offsets"), list):
            if len(doc["texts"]) != 1 or len(doc["offsets"]) != 1 or not isinstance(doc["texts"][0], str):
                raise ValueError(f"{path}: holds {len(doc['offsets'])} lines of text; measure one line per file")
            return read_handwriting(json.dumps(doc["offsets"][0]), str(path)), doc["texts"][0]
    return load_handwriting_file(path), None


def measure_handwriting(
    paths: list[Path], png_dir: Path | None, ocr: bool = True, texts: list[str] | None = None
) -> dict[str, Any]:
    """Legibility (Tesseract; CER against `texts`, or against the texts the files carry when every file carries
    one) and style consistency of one line per file."""
    read = [read_line(p) for p in paths]
    lines = [off for off, _ in read]
    if texts is None and read and all(t is not None for _, t in read):
        texts = [str(t) for _, t in read]
    if texts is not None and len(texts) != len(paths):
        raise ValueError(f"{len(texts)} texts for {len(paths)} files: give one text line per file, in order")
    result: dict[str, Any] = {"files": len(paths)}
    if ocr:
        readings = []
        for path, off in zip(paths, lines, strict=True):
            png = render_png(off)
            if png_dir is not None:
                png_dir.mkdir(parents=True, exist_ok=True)
                (png_dir / f"{path.stem}.png").write_bytes(png)
            readings.append({"file": str(path), **asdict(read_png(png))})
            if texts is not None:
                readings[-1]["truth"] = texts[len(readings) - 1]
                readings[-1]["cer"] = char_error_rate(readings[-1]["text"], readings[-1]["truth"])
        result["legibility"] = _summary([r["confidence"] for r in readings])
        if texts is not None:
            result["cer"] = _summary([r["cer"] for r in readings])
        result["readings"] = readings
    try:
        style = style_consistency(lines)
        result["style"] = {**asdict(style), "slant_ratio": style.slant_ratio, "size_ratio": style.size_ratio}
    except ValueError as e:
        result["style"] = {"error": str(e)}
    return result


def measure_speech(paths: list[Path], reference: Path | None, limit: int = 200) -> dict[str, Any]:
    def stats(files: list[Path]) -> dict[str, Any]:
        zcr, hf = [], []
        for f in files:
            wave = load_audio(f, SAMPLE_RATE)
            zcr.append(zero_crossing_rate(wave))
            hf.append(high_frequency_fraction(wave, SAMPLE_RATE))
        return {"files": len(files), "zcr": _summary(zcr), "hf_fraction": _summary(hf)}

    result = {"samples": stats(paths)}
    if reference is not None:
        files = sorted(p for p in reference.rglob("*") if p.suffix.lower() in (".wav", ".flac"))[:limit]
        if not files:
            raise ValueError(f"no WAV/FLAC files under {reference}")
        result["reference"] = stats(files)
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m model.quality",
        description="Measure samples: handwriting legibility (Tesseract) and style consistency; speech noisiness.",
        epilog="exit status: 0 done, 1 Tesseract missing, 2 bad arguments or unreadable files",
    )
    sub = p.add_subparsers(dest="modality", required=True)
    h = sub.add_parser("handwriting", help="JSON offsets, IAM-OnDB XML or JSON strokes")
    h.add_argument("files", nargs="+", type=Path)
    h.add_argument("--png-dir", type=Path, help="also write each line's render here")
    h.add_argument("--no-ocr", action="store_true", help="style only (no Tesseract)")
    h.add_argument("--texts", type=Path, help="a file with the intended text of each input, one line each: adds CER")
    s = sub.add_parser("speech", help="WAV/FLAC samples")
    s.add_argument("files", nargs="+", type=Path)
    s.add_argument("--reference", type=Path, help="a corpus folder of real speech to compare with")
    for q in (h, s):
        q.add_argument("--json", type=Path, help="write the full result here")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    missing = [str(f) for f in args.files if not f.is_file()]
    if missing:
        parser.error(f"no such file(s): {', '.join(missing[:5])}")
    try:
        if args.modality == "handwriting":
            if not args.no_ocr and not tesseract_available():
                print(
                    "error: tesseract is not installed (apt-get install tesseract-ocr), or pass --no-ocr",
                    file=sys.stderr,
                )
                return 1
            texts = args.texts.read_text(encoding="utf-8").splitlines() if args.texts else None
            result = measure_handwriting(args.files, args.png_dir, ocr=not args.no_ocr, texts=texts)
        else:
            result = measure_speech(args.files, args.reference)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    shown = {k: v for k, v in result.items() if k != "readings"}
    print(json.dumps(shown, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
