"""Online handwriting: pen trajectories -> x_t = (dx, dy, pen).

Inputs: IAM-OnDB `lineStrokes` XML (WhiteboardCaptureSession > StrokeSet > Stroke > Point(x, y, time)),
JSON strokes `[[[x, y], ...], ...]` (absolute coordinates, y growing downwards as on a screen and in
IAM-OnDB), or offsets `(T, 3)` as a NumPy `.npy` file or JSON `[[dx, dy, pen], ...]` (already y-up).

A point becomes its offset from the previous point (the first point's offset is (0, 0)); y is flipped
so that up is positive; pen = 1 on the last point of each stroke, so the offset after a pen-1 point is
a move with the pen up.

XML is parsed with expat and refuses any DOCTYPE (so no entity can be declared, let alone expanded).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from xml.parsers import expat

import numpy as np

from . import defaults
from .corpus import Corpus, find_files, report_skipped, split_items
from .errors import DataError
from .normalise import fit_handwriting_stats

# Parsing ---------------------------------------------------------------------------------------------


def parse_iam_xml(data: bytes | str, name: str = "XML") -> list[np.ndarray]:
    """IAM-OnDB lineStrokes XML -> list of strokes, each (N, 2) float64 absolute (x, y), y downwards."""
    strokes: list[list[tuple[float, float]]] = []
    stack: list[str] = []
    in_stroke_set = 0

    def start(tag: str, attrs: dict[str, str]) -> None:
        nonlocal in_stroke_set
        parent = stack[-1] if stack else None
        stack.append(tag)
        if tag == "StrokeSet":
            in_stroke_set += 1
        elif tag == "Stroke" and in_stroke_set:
            strokes.append([])
        elif tag == "Point" and in_stroke_set:
            if parent != "Stroke":
                raise DataError(f"{name}: a Point outside a Stroke (line {parser.CurrentLineNumber})")
            try:
                strokes[-1].append((float(attrs["x"]), float(attrs["y"])))
            except (KeyError, ValueError):
                raise DataError(
                    f"{name}: Point without numeric x and y attributes (line {parser.CurrentLineNumber})"
                ) from None

    def end(tag: str) -> None:
        nonlocal in_stroke_set
        stack.pop()
        if tag == "StrokeSet":
            in_stroke_set -= 1

    def refuse_doctype(*_: Any) -> None:
        raise DataError(f"{name}: DOCTYPE/ENTITY declarations are not allowed (entity-expansion attacks)")

    def refuse_external(*_: Any) -> int:
        raise DataError(f"{name}: external entities are not allowed")

    parser = expat.ParserCreate()
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.StartDoctypeDeclHandler = refuse_doctype
    parser.EntityDeclHandler = refuse_doctype
    parser.ExternalEntityRefHandler = refuse_external
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    try:
        parser.Parse(data.encode("utf-8") if isinstance(data, str) else data, True)
    except expat.ExpatError as e:
        raise DataError(f"{name}: not well-formed XML ({e})") from None
    points = [np.asarray(s, dtype=np.float64) for s in strokes if s]
    if not points:
        raise DataError(f"{name}: no StrokeSet > Stroke > Point found; is it an IAM-OnDB lineStrokes file?")
    return points


def parse_json(data: bytes | str, name: str = "JSON") -> np.ndarray:
    """JSON strokes `[[[x, y], ...], ...]` (absolute, y down) or offsets `[[dx, dy, pen], ...]` -> (T, 3)."""
    try:
        obj = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{name}: not valid JSON ({e})") from None
    if isinstance(obj, dict) and "strokes" in obj:
        obj = obj["strokes"]
    if not isinstance(obj, list) or not obj:
        raise DataError(f"{name}: expected a non-empty JSON list of strokes [[[x, y], ...], ...]")
    if all(isinstance(row, list) and row and all(_is_number(v) for v in row) for row in obj):
        return check_offsets(np.asarray(obj, dtype=np.float64), name)
    strokes = []
    for i, stroke in enumerate(obj):
        if not isinstance(stroke, list):
            raise DataError(f"{name}: stroke {i} is not a list of [x, y] points")
        for j, p in enumerate(stroke):
            if not (isinstance(p, list) and len(p) == 2 and all(_is_number(v) for v in p)):
                raise DataError(f"{name}: stroke {i}, point {j}: expected [x, y] numbers, got {json.dumps(p)[:40]}")
        if stroke:
            strokes.append(np.asarray(stroke, dtype=np.float64))
    if not strokes:
        raise DataError(f"{name}: every stroke is empty")
    return strokes_to_offsets(strokes, name)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


# Conversions -----------------------------------------------------------------------------------------


def strokes_to_offsets(strokes: list[np.ndarray], name: str = "strokes") -> np.ndarray:
    """Strokes of absolute (x, y) points, y downwards -> (T, 3) float32 (dx, dy, pen), y upwards."""
    strokes = [np.asarray(s, dtype=np.float64).reshape(-1, 2) for s in strokes if len(s)]
    if not strokes:
        raise DataError(f"{name}: no points")
    points = np.concatenate(strokes)
    if not np.isfinite(points).all():
        raise DataError(f"{name}: non-finite coordinates")
    out = np.zeros((len(points), 3), dtype=np.float64)
    out[1:, 0] = np.diff(points[:, 0])
    out[1:, 1] = -np.diff(points[:, 1])  # y flipped: up is positive
    ends = np.cumsum([len(s) for s in strokes]) - 1
    out[ends, 2] = 1.0
    return out.astype(np.float32)


def offsets_to_strokes(offsets: np.ndarray) -> list[np.ndarray]:
    """(T, 3) offsets -> strokes of absolute (x, y) points, y upwards, starting at (0, 0) (for drawing)."""
    offsets = np.asarray(offsets, dtype=np.float64)
    xy = np.cumsum(offsets[:, :2], axis=0)
    ends = np.flatnonzero(offsets[:, 2] > 0.5) + 1
    return [s for s in np.split(xy, ends) if len(s)]


def check_offsets(arr: Any, name: str = "offsets") -> np.ndarray:
    """Validate a (T, 3) array (dx, dy, pen) -> float32; pen must be 0 or 1."""
    arr = np.asarray(arr)
    if arr.ndim != 2 or arr.shape[1] != defaults.HANDWRITING_DIM:
        raise DataError(f"{name}: expected an array of shape (T, 3) holding (dx, dy, pen), got shape {arr.shape}")
    if arr.dtype.kind not in "fiub":
        raise DataError(f"{name}: expected numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float32)
    if len(arr) == 0:
        raise DataError(f"{name}: no points")
    if not np.isfinite(arr).all():
        raise DataError(f"{name}: non-finite values")
    if not np.isin(arr[:, 2], (0.0, 1.0)).all():
        raise DataError(f"{name}: the pen column (third) must hold only 0 and 1")
    return arr


# Files -----------------------------------------------------------------------------------------------


def read_handwriting(data: bytes | str, name: str = "handwriting data") -> np.ndarray:
    """File contents (XML, JSON, or .npy bytes) -> (T, 3) offsets; the format is recognised by content."""
    if len(data) > defaults.MAX_HANDWRITING_FILE_BYTES:
        raise DataError(f"{name}: {len(data)} bytes is more than the {defaults.MAX_HANDWRITING_FILE_BYTES} allowed")
    if isinstance(data, bytes | bytearray) and bytes(data[:6]) == b"\x93NUMPY":
        import io

        try:
            arr = np.load(io.BytesIO(data), allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise DataError(f"{name}: not a readable .npy array ({e})") from None
        return check_offsets(arr, name)
    head = (data[:200].decode("utf-8", "replace") if isinstance(data, bytes | bytearray) else data[:200]).lstrip(
        "\ufeff \t\r\n"
    )
    if head.startswith("<"):
        return strokes_to_offsets(parse_iam_xml(data, name), name)
    if head.startswith(("[", "{")):
        return parse_json(data, name)
    raise DataError(f"{name}: not IAM-OnDB XML, JSON strokes or a .npy (T, 3) array")


def load_handwriting_file(path: str | Path, name: str | None = None) -> np.ndarray:
    """One .xml / .json / .npy file -> raw (T, 3) offsets (not normalised: see `NormStats.preprocess`)."""
    path = Path(path)
    label = name or str(path)
    try:
        size = path.stat().st_size
        if size > defaults.MAX_HANDWRITING_FILE_BYTES:
            raise DataError(f"{label}: {size} bytes is more than the {defaults.MAX_HANDWRITING_FILE_BYTES} allowed")
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"{label}: cannot read ({e.strerror or e})") from None
    return read_handwriting(data, label)


def load_handwriting_corpus(
    root: str | Path,
    seed: int = defaults.SPLIT_SEED,
    fractions: tuple[float, float, float] = defaults.SPLIT_FRACTIONS,
    clip_mads: float | None = defaults.HANDWRITING_CLIP_MADS,
    max_files: int | None = None,
) -> Corpus:
    """A folder tree of .xml / .json / .npy files (IAM-OnDB's lineStrokes/ for one) -> split, clipped,
    normalised `Corpus` of (T, 3) sequences, one per file. Unreadable or malformed files (and ones with
    fewer than 2 points) are skipped with one warning; an error is raised if none is usable."""
    root = Path(root)
    files = find_files(root, defaults.HANDWRITING_EXTENSIONS, exclude=defaults.METADATA_FILES)[:max_files]
    base = root if root.is_dir() else root.parent
    seqs: list[np.ndarray] = []
    labels: list[str] = []
    skipped: list[tuple[str, str]] = []
    for path in files:
        rel = str(path.relative_to(base))
        try:
            x = load_handwriting_file(path, rel)
        except DataError as e:
            skipped.append((rel, str(e).removeprefix(f"{rel}: ")))
            continue
        if len(x) < 2:
            skipped.append((rel, "fewer than 2 points"))
            continue
        seqs.append(x)
        labels.append(rel)
    report_skipped(skipped, len(files), root)
    if not seqs:
        raise DataError(
            f"{root}: none of the {len(files)} handwriting files could be used ({skipped[0][0]}: {skipped[0][1]})"
        )

    idx = split_items(list(range(len(seqs))), fractions, seed)
    stats = fit_handwriting_stats([seqs[i] for i in idx[0]], clip_mads)
    train, valid, test = ([stats.preprocess(seqs[i]) for i in ids] for ids in idx)
    names = {s: [labels[i] for i in ids] for s, ids in zip(("train", "valid", "test"), idx, strict=True)}
    return Corpus("handwriting", str(root), train, valid, test, names, stats, skipped)
