"""Online handwriting: pen trajectories -> x_t = (dx, dy, pen).

Inputs: IAM-OnDB `lineStrokes` XML (WhiteboardCaptureSession > StrokeSet > Stroke > Point(x, y, time)),
JSON strokes `[[[x, y], ...], ...]` (absolute coordinates, y growing downwards as on a screen and in
IAM-OnDB), or offsets `(T, 3)` as a NumPy `.npy` file or JSON `[[dx, dy, pen], ...]` (already y-up).

A point becomes its offset from the previous point (the first point's offset is (0, 0)); y is flipped
so that up is positive; pen = 1 on the last point of each stroke, so the offset after a pen-1 point is
a move with the pen up. A corpus drops each line's first point, whose offset says nothing (the authors'
IAM-OnDB loader kept only the differences of consecutive points).

Splits: by writer when the corpus says who wrote each line (the demo corpora's manifest.json), so that
no writer's hand is in two splits; by IAM-OnDB's own form lists when they sit beside the data
(`IAM_SPLIT_FILES`); else by line.

XML is parsed with expat and refuses any DOCTYPE (so no entity can be declared, let alone expanded).
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any
from xml.parsers import expat

import numpy as np

from . import defaults
from .corpus import SPLITS, Corpus, find_files, report_skipped, split_items
from .errors import DataError
from .normalise import fit_handwriting_stats

# Parsing ---------------------------------------------------------------------------------------------


def safe_xml_parser(name: str) -> Any:
    """An expat parser that refuses DTDs, entity declarations and external entities (entity-expansion attacks),
    naming `name` in its errors; set its element handlers, then call `parse_xml`."""

    def refuse_doctype(*_: Any) -> None:
        raise DataError(f"{name}: DOCTYPE/ENTITY declarations are not allowed (entity-expansion attacks)")

    def refuse_external(*_: Any) -> int:
        raise DataError(f"{name}: external entities are not allowed")

    parser = expat.ParserCreate()
    parser.StartDoctypeDeclHandler = refuse_doctype
    parser.EntityDeclHandler = refuse_doctype
    parser.ExternalEntityRefHandler = refuse_external
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    return parser


def parse_xml(parser: Any, data: bytes | str, name: str) -> None:
    try:
        parser.Parse(data.encode("utf-8") if isinstance(data, str) else data, True)
    except expat.ExpatError as e:
        raise DataError(f"{name}: not well-formed XML ({e})") from None


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

    parser = safe_xml_parser(name)
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parse_xml(parser, data, name)
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


# IAM-OnDB's task lists of forms (e.g. "a01-000u"; a line file is FORM-NN.xml), searched in the data
# folder and the one above it (IAM-OnDB's root holds lineStrokes/ and the lists): the training set,
# the validation set (testset_v) and the test sets (testset_t and testset_f together), or the authors'
# concatenated train.txt / valid.txt (their valid.txt then serves as the test split too: they had no
# other held-out set). A line whose form is in no list is left out.
IAM_SPLIT_FILES = {
    "train": ("trainset.txt", "train.txt"),
    "valid": ("testset_v.txt", "valid.txt"),
    "test": ("testset_t.txt", "testset_f.txt", "test.txt"),
}


def find_iam_split(root: str | Path) -> dict[str, set[str]] | None:
    """The IAM-OnDB form lists beside `root` (see `IAM_SPLIT_FILES`) -> {split: form ids}, or None."""
    root = Path(root)
    base = root if root.is_dir() else root.parent
    for folder in (base, base.parent):
        found = {s: [folder / n for n in names if (folder / n).is_file()] for s, names in IAM_SPLIT_FILES.items()}
        if found["train"] and (found["valid"] or found["test"]):
            lists = {s: {w for f in files for w in f.read_text(errors="replace").split()} for s, files in found.items()}
            if not lists["test"]:
                lists["test"] = lists["valid"]
            if not lists["valid"]:
                lists["valid"] = lists["test"]
            return lists
    return None


def form_id(label: str) -> str:
    """IAM-OnDB line file -> its form: "lineStrokes/a01/a01-000/a01-000u-01.xml" -> "a01-000u"."""
    stem = Path(label).stem
    return re.sub(r"-\d+$", "", stem)


def manifest_writers(root: str | Path) -> dict[str, str]:
    """{file relative to root: writer} from a demo corpus's manifest.json, in root or the folder above
    it (data/handwriting-demo or data/handwriting-demo/lineStrokes); {} without one."""
    base = Path(root) if Path(root).is_dir() else Path(root).parent
    for folder in (base, base.parent):
        path = folder / "manifest.json"
        if not path.is_file():
            continue
        prefix = base.relative_to(folder)
        try:
            records = json.loads(path.read_text()).get("files", [])
            out = {}
            for r in records:
                rel = Path(r["file"])
                if "writer" in r and rel.is_relative_to(prefix):
                    out[str(rel.relative_to(prefix))] = str(r["writer"])
            return out
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return {}
    return {}


def split_groups(
    labels: list[str], groups: list[str], fractions: tuple[float, float, float], seed: int
) -> tuple[list[int], list[int], list[int]]:
    """Split item indices so that all items of a group (a writer) land in the same split: the sorted
    groups are shuffled and cut by `fractions`, then each split takes its groups' items in label order."""
    names = sorted(set(groups))
    parts = split_items(names, fractions, seed)
    where = {g: k for k, part in enumerate(parts) for g in part}
    out: tuple[list[int], list[int], list[int]] = ([], [], [])
    for i in sorted(range(len(labels)), key=lambda i: labels[i]):
        out[where[groups[i]]].append(i)
    return out


def load_handwriting_corpus(
    root: str | Path,
    seed: int = defaults.SPLIT_SEED,
    fractions: tuple[float, float, float] = defaults.SPLIT_FRACTIONS,
    clip_mads: float | None = defaults.HANDWRITING_CLIP_MADS,
    max_files: int | None = None,
    drop_first: bool = True,
    split_by: str = "auto",
    point_stride: int = 1,
) -> Corpus:
    """A folder tree of .xml / .json / .npy files (IAM-OnDB's lineStrokes/ for one) -> split, clipped,
    normalised `Corpus` of (T, 3) sequences, one per file. Unreadable or malformed files (and ones with
    fewer than 2 points) are skipped with one warning; an error is raised if none is usable.

    drop_first: drop each line's first point (its offset is always (0, 0)).
    split_by: "auto" (IAM-OnDB form lists if present, else by writer if the manifest names them,
    else by line), "iam", "writer" or "line".
    point_stride: thin every line to every point_stride-th point of each stroke (NormStats.point_stride)."""
    if split_by not in SPLIT_BY:
        raise DataError(f"split_by must be one of {SPLIT_BY}, got {split_by!r}")
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
        if drop_first:
            x = x[1:]
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

    idx, how = _split(root, labels, fractions, seed, split_by)
    stats = fit_handwriting_stats([seqs[i] for i in idx[0]], clip_mads, point_stride)
    train, valid, test = ([stats.preprocess(seqs[i]) for i in ids] for ids in idx)
    names = {s: [labels[i] for i in ids] for s, ids in zip(("train", "valid", "test"), idx, strict=True)}
    return Corpus("handwriting", str(root), train, valid, test, names, stats, skipped, how == "iam", how)


SPLIT_BY = ("auto", "iam", "writer", "line")


def _split(
    root: Path, labels: list[str], fractions: tuple[float, float, float], seed: int, split_by: str
) -> tuple[tuple[list[int], list[int], list[int]], str]:
    """(train, valid, test) indices of `labels` and how they were split ("iam", "writer" or "line")."""
    if split_by in ("auto", "iam"):
        lists = find_iam_split(root)
        if lists is not None:
            forms = [form_id(lab) for lab in labels]
            idx = tuple(
                [i for i, f in enumerate(forms) if f in lists[s] or Path(labels[i]).stem in lists[s]] for s in SPLITS
            )
            if not idx[0]:
                raise DataError(f"{root}: no line belongs to a form listed in the IAM-OnDB training list")
            left = len(labels) - len(set().union(*map(set, idx)))
            if left:
                warnings.warn(
                    f"{root}: {left} of {len(labels)} lines are in no IAM-OnDB split list: left out", stacklevel=3
                )
            return idx, "iam"  # type: ignore[return-value]
        if split_by == "iam":
            raise DataError(
                f"{root}: no IAM-OnDB split lists beside the data "
                f"({', '.join(n for v in IAM_SPLIT_FILES.values() for n in v)})"
            )
    if split_by in ("auto", "writer"):
        writers = manifest_writers(root)
        groups = [writers.get(lab) for lab in labels]
        if all(g is not None for g in groups) and len(set(groups)) >= 3:
            return split_groups(labels, groups, fractions, seed), "writer"  # type: ignore[arg-type]
        if split_by == "writer":
            raise DataError(
                f"{root}: a by-writer split needs manifest.json to name the writer of every line "
                "(and 3 writers or more)"
            )
    return split_items(list(range(len(labels))), fractions, seed), "line"
