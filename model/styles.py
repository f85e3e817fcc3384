"""Named styles of a text checkpoint: real lines of one writer each, with their text, to prime the model with.

A text-conditioned checkpoint NAME.safetensors + NAME.json may have NAME.styles.json beside it:

    {"format_version": 1,
     "styles": {"w058": {"writer": "w058", "text": "the line's text", "offsets": [[dx, dy, pen], ...]}, ...}}

`offsets` are the line as an upload of it reads (`model.data.read_handwriting`: raw input units, y up, pen = 1 on
the last point of each stroke, the first point included), so priming with a style is priming with that line and its
text (`model.inference.generate_text(..., prime=style.offsets, prime_text=style.text)`). Bounds: at most
MAX_STYLES styles, each one line of at most MAX_STYLE_POINTS points whose text (at most MAX_STYLE_TEXT_CHARS
characters) the model's alphabet holds, and a file of at most MAX_STYLES_BYTES; `load_styles` refuses anything else
with a StylesError naming the file and what is wrong (the service's cache then serves the model without styles).

The command line adds styles to an existing text checkpoint from a corpus (one line per writer of its test split by
default; the corpus's by-writer split, as `model.train` makes it):

    python -m model.styles checkpoints/handwriting-text-vrnn-gmm.safetensors --data data/handwriting-alphabet
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import cli
from .checkpoint import CheckpointError, path_beside, read_beside, read_text_metadata, write_beside
from .data import DataError
from .data.corpus import SPLITS, Corpus
from .data.handwriting import (
    check_offsets,
    form_id,
    load_handwriting_corpus,
    load_handwriting_file,
    manifest_writers,
    parse_xml,
    safe_xml_parser,
)
from .data.texts import line_text
from .text import UnsupportedCharactersError, encode, normalise

FORMAT_VERSION = 1
SUFFIX = ".styles.json"
MAX_STYLES = 20
MAX_STYLE_POINTS = 1000  # about one IAM-OnDB line; priming reads all of it before every request with the style
MAX_STYLE_TEXT_CHARS = 99  # the service's bound on a prime's text (worker.limits.MAX_PRIME_TEXT_CHARS)
MAX_WRITER_CHARS = 128
MAX_STYLE_NAME_CHARS = 64
# 20 styles of 1000 points at about 20 bytes a point, with room to spare; anything larger is not a styles file.
MAX_STYLES_BYTES = 1024 * 1024
STYLE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"  # as model names: they travel in JSON bodies and logs
_NAME = re.compile(STYLE_NAME_PATTERN)


class StylesError(ValueError):
    """A styles file that cannot be used, or bad arguments of the command line; the message says what to change."""


@dataclass(frozen=True)
class Style:
    """One named style: a line by `writer` whose text is `text`; `offsets` raw (T, 3) float32, as an upload reads."""

    name: str
    writer: str
    text: str
    offsets: np.ndarray

    def to_json(self) -> dict[str, Any]:
        rows = [[_number(dx), _number(dy), int(pen)] for dx, dy, pen in self.offsets.tolist()]
        return {"writer": self.writer, "text": self.text, "offsets": rows}


def _number(v: float) -> int | float:
    """A float32 offset as JSON: whole numbers as integers (pen tablets give integers), others exactly (the float32
    value's shortest repr, which reads back to the same float32)."""
    return int(v) if float(v).is_integer() and abs(v) < 2**53 else float(v)


def styles_path(checkpoint: str | Path) -> Path:
    """NAME.styles.json beside the checkpoint NAME.safetensors (or NAME.json, or NAME)."""
    return path_beside(checkpoint, SUFFIX)


def check_name(name: Any, label: str = "style") -> str:
    if not (isinstance(name, str) and len(name) <= MAX_STYLE_NAME_CHARS and _NAME.fullmatch(name)):
        raise StylesError(
            f"{label} name {str(name)[:80]!r} is not usable: letters, digits, '.', '_' and '-', not starting with "
            f"punctuation, at most {MAX_STYLE_NAME_CHARS} characters"
        )
    return name


def make_style(name: str, writer: Any, text: Any, offsets: Any, alphabet: str, label: str = "style") -> Style:
    """A checked Style: its name, writer, text (normalised; in `alphabet`) and offsets within the bounds above."""
    check_name(name, label)
    label = f"{label} {name!r}"
    if not isinstance(writer, str) or not writer or len(writer) > MAX_WRITER_CHARS:
        raise StylesError(f"{label}: 'writer' must be a string of 1 to {MAX_WRITER_CHARS} characters")
    if not isinstance(text, str):
        raise StylesError(f"{label}: 'text' must be a string (the line's text)")
    text = normalise(text)
    if not text or len(text) > MAX_STYLE_TEXT_CHARS:
        raise StylesError(f"{label}: its text has {len(text)} characters; a style's has 1 to {MAX_STYLE_TEXT_CHARS}")
    try:
        encode(text, alphabet)
    except UnsupportedCharactersError as e:
        raise StylesError(f"{label}: {e}") from None
    if isinstance(offsets, np.ndarray):
        rows = offsets
    else:
        ok = isinstance(offsets, list) and all(
            isinstance(r, list) and len(r) == 3 and all(_is_number(v) for v in r) for r in offsets
        )
        if not ok:
            raise StylesError(f"{label}: 'offsets' must be a list of [dx, dy, pen] numbers")
        rows = np.asarray(offsets, dtype=np.float64)  # as model.data.parse_json reads an upload's offsets
    try:
        arr = check_offsets(rows, label)
    except DataError as e:
        raise StylesError(str(e)) from None
    if not 2 <= len(arr) <= MAX_STYLE_POINTS:
        raise StylesError(f"{label}: {len(arr)} points; a style is one line of 2 to {MAX_STYLE_POINTS} points")
    return Style(name, writer, text, arr)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def parse_styles(data: bytes | str, alphabet: str, label: str = "styles") -> dict[str, Style]:
    """A styles file's contents -> {name: Style}, every style checked against the bounds and `alphabet`."""
    if len(data) > MAX_STYLES_BYTES:
        raise StylesError(f"{label}: {len(data)} bytes is more than the {MAX_STYLES_BYTES} a styles file may have")
    try:
        doc = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise StylesError(f"{label}: not valid JSON ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("styles"), dict):
        raise StylesError(f'{label}: expected {{"format_version": {FORMAT_VERSION}, "styles": {{name: ...}}}}')
    if doc.get("format_version") != FORMAT_VERSION:
        raise StylesError(
            f"{label}: format_version {doc.get('format_version')!r} is not {FORMAT_VERSION}, the one this version "
            "reads; write the file again with `python -m model.styles`"
        )
    entries = doc["styles"]
    if len(entries) > MAX_STYLES:
        raise StylesError(f"{label}: {len(entries)} styles; a checkpoint has at most {MAX_STYLES}")
    styles: dict[str, Style] = {}
    for name, entry in entries.items():
        if not isinstance(entry, dict):
            raise StylesError(f"{label}: style {name!r} must be an object with writer, text and offsets")
        styles[name] = make_style(
            name, entry.get("writer"), entry.get("text"), entry.get("offsets"), alphabet, f"{label}: style"
        )
    return styles


def load_styles(checkpoint: str | Path, alphabet: str) -> dict[str, Style]:
    """The styles beside a text checkpoint ({} when it has no NAME.styles.json); StylesError naming the file when it
    is too large or not a valid styles file for this alphabet."""
    path = styles_path(checkpoint)
    data = read_beside(path, MAX_STYLES_BYTES, "a styles file", StylesError)
    if data is None:
        return {}
    return parse_styles(data, alphabet, str(path))


def dump_styles(styles: dict[str, Style] | list[Style]) -> str:
    """The styles file's text: one style per line, compact."""
    items = list(styles.values()) if isinstance(styles, dict) else list(styles)
    body = ",\n".join(f"  {json.dumps(s.name)}: {json.dumps(s.to_json(), separators=(',', ':'))}" for s in items)
    return f'{{"format_version": {FORMAT_VERSION}, "styles": {{\n{body}\n}}}}\n'


def write_styles(checkpoint: str | Path, styles: list[Style]) -> Path:
    """Write NAME.styles.json beside the checkpoint (atomically), after checking the bounds."""
    if len(styles) > MAX_STYLES:
        raise StylesError(f"{len(styles)} styles; a checkpoint has at most {MAX_STYLES}")
    if len({s.name for s in styles}) != len(styles):
        raise StylesError("two styles have the same name")
    text = dump_styles(styles)
    if len(text.encode()) > MAX_STYLES_BYTES:
        raise StylesError(
            f"the styles take {len(text.encode())} bytes, more than the {MAX_STYLES_BYTES} allowed; add fewer"
        )
    return write_beside(styles_path(checkpoint), text)


# From a corpus ------------------------------------------------------------------------------------


def xml_writer(path: Path) -> str | None:
    """The `writerID` of a lineStrokes XML's `<Form>`, or None."""
    found: list[str] = []

    def start(tag: str, attrs: dict[str, str]) -> None:
        if tag == "Form" and attrs.get("writerID") and not found:
            found.append(attrs["writerID"])

    try:
        parser = safe_xml_parser(str(path))
        parser.StartElementHandler = start
        parse_xml(parser, path.read_bytes(), str(path))
    except (OSError, DataError):
        return None
    return found[0] if found else None


def style_name(writer: str) -> str:
    """A usable style name from a writer id ("w058" stays "w058")."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", writer).strip("-")[:MAX_STYLE_NAME_CHARS]
    return name if name and name[0].isalnum() else f"w{name}"[:MAX_STYLE_NAME_CHARS]


def corpus_styles(
    data: str | Path | Corpus,
    alphabet: str,
    split: str = "test",
    per_writer: int = 1,
    max_styles: int = MAX_STYLES,
) -> list[Style]:
    """Styles from a handwriting corpus (a folder, or a loaded `Corpus`: its lines' files are read again, raw): for
    each writer of `split` (the corpus's split, by writer where it can, as `model.train` splits it), in writer order,
    the first `per_writer` lines in file order that have a text the alphabet holds (at most MAX_STYLE_TEXT_CHARS
    characters) and at most MAX_STYLE_POINTS points; at most `max_styles` in all. Named by writer ("w058"; "w058-2",
    ... for a writer's further lines)."""
    if split not in SPLITS:
        raise StylesError(f"unknown split {split!r}; pick one of {', '.join(SPLITS)}")
    corpus = data if isinstance(data, Corpus) else load_handwriting_corpus(data)
    root = Path(corpus.root)
    base = root if root.is_dir() else root.parent
    writers = manifest_writers(root)
    by_writer: dict[str, list[Style]] = {}
    for rel in sorted(corpus.names[split]):
        path = base / rel
        writer = writers.get(rel) or (xml_writer(path) if path.suffix.lower() == ".xml" else None) or form_id(rel)
        chosen = by_writer.setdefault(writer, [])
        if len(chosen) >= per_writer:
            continue
        try:
            text = line_text(path)
            offsets = load_handwriting_file(path, rel) if text is not None else None
        except DataError:
            continue
        if text is None or offsets is None:
            continue
        name = style_name(writer) + (f"-{len(chosen) + 1}" if chosen else "")
        try:
            chosen.append(make_style(name, writer, text, offsets, alphabet, rel))
        except StylesError:  # too long, or characters outside the alphabet: the writer's next line
            continue
    styles = [s for writer in sorted(by_writer) for s in by_writer[writer]]
    return styles[:max_styles]


def add_styles(checkpoint: str | Path, new: list[Style], alphabet: str, replace: bool = False) -> dict[str, Style]:
    """The checkpoint's styles with `new` added (a name already there is replaced; `replace`: only `new`)."""
    styles = {} if replace else load_styles(checkpoint, alphabet)
    for s in new:
        styles[s.name] = s
    if len(styles) > MAX_STYLES:
        raise StylesError(
            f"{styles_path(checkpoint)} would hold {len(styles)} styles, and a checkpoint has at most {MAX_STYLES}; "
            "add fewer (--max), or --replace the ones there"
        )
    styles = dict(sorted(styles.items()))
    write_styles(checkpoint, list(styles.values()))
    return styles


def text_alphabet(checkpoint: str | Path) -> str:
    """The alphabet of a text checkpoint; StylesError when it is not one."""
    try:
        return str(read_text_metadata(checkpoint)["config"]["alphabet"])
    except CheckpointError as e:
        raise StylesError(str(e)) from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m model.styles",
        description="Add named styles to a text checkpoint: real lines of one writer each, with their text, taken "
        "from a handwriting corpus and written to NAME.styles.json beside the checkpoint (the service lists them "
        'in GET /models and writes text in one with POST /generate/handwriting {"text": ..., "style": NAME}). '
        f"At most {MAX_STYLES} styles, each a line of at most {MAX_STYLE_POINTS} points whose text (at most "
        f"{MAX_STYLE_TEXT_CHARS} characters) the model's alphabet holds.",
        epilog="example:\n  python -m model.styles checkpoints/handwriting-text-vrnn-gmm.safetensors "
        "--data data/handwriting-alphabet\n  (one line per writer of the test split, named by writer: w016, ...)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", type=Path, help="a text checkpoint (NAME.safetensors with NAME.json beside it)")
    p.add_argument("--data", type=Path, required=True, help="the handwriting corpus (IAM-OnDB-style lineStrokes)")
    p.add_argument("--split", choices=SPLITS, default="test", help="whose writers give the styles (default: test)")
    p.add_argument(
        "--per-writer",
        type=cli.whole_number(1, MAX_STYLES),
        default=1,
        help="lines per writer (default 1; a writer's further lines are named w058-2, ...)",
    )
    p.add_argument(
        "--max",
        type=cli.whole_number(1, MAX_STYLES),
        default=MAX_STYLES,
        help=f"at most this many new styles (default and most: {MAX_STYLES})",
    )
    p.add_argument("--replace", action="store_true", help="drop the styles already there (default: add to them)")
    args = p.parse_args(argv)
    if not args.data.exists():
        p.error(f"--data {args.data}: no such file or folder; give the corpus folder (e.g. data/handwriting-alphabet)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        alphabet = text_alphabet(args.checkpoint)
        new = corpus_styles(args.data, alphabet, args.split, args.per_writer, args.max)
        if not new:
            raise StylesError(
                f"{args.data}: no {args.split} line has a text this model can write (at most {MAX_STYLE_TEXT_CHARS} "
                f"characters of its alphabet) and at most {MAX_STYLE_POINTS} points; try another --split"
            )
        styles = add_styles(args.checkpoint, new, alphabet, args.replace)
    except (StylesError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    path = styles_path(args.checkpoint)
    added = ", ".join(f"{s.name} ({len(s.offsets)} points: {s.text!r})" for s in new)
    print(f"{path}: {len(styles)} style(s); added {added}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
