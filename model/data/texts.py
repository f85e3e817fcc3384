"""The text of handwriting lines, for text-conditioned models: where each format keeps it.

- The demo corpus (and any IAM-style lineStrokes XML that carries it): `<Transcription><TextLine text="..."/>`.
- IAM-OnDB: the line files hold strokes only; the text is in `ascii/` beside `lineStrokes/`: one file per form
  (`ascii/a01/a01-000/a01-000u.txt`), whose lines after `CSR:` are the form's text lines in order, so line NN of
  form F (`lineStrokes/.../F-NN.xml`) is the NN-th of them (1-based).
- JSON: an object `{"strokes": [[[x, y], ...], ...], "text": "..."}` (or `"offsets"` instead of `"strokes"`).

XML is parsed with expat, refusing DTDs and entities as the stroke reader does; every error names the file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .errors import DataError
from .handwriting import parse_xml, safe_xml_parser

MAX_TEXT_FILE_BYTES = 1 << 20
_LINE_FILE = re.compile(r"^(?P<form>[a-z0-9]+-[a-z0-9]+[a-z]?)-(?P<line>\d+)$", re.IGNORECASE)


def text_from_xml(data: bytes | str, name: str = "XML") -> str | None:
    """The `TextLine text` of a lineStrokes XML, or None when it has none."""
    found: list[str] = []

    def start(tag: str, attrs: dict[str, str]) -> None:
        if tag == "TextLine" and "text" in attrs and not found:
            found.append(attrs["text"])

    parser = safe_xml_parser(name)
    parser.StartElementHandler = start
    parse_xml(parser, data, name)
    return found[0] if found else None


def text_from_json(data: bytes | str, name: str = "JSON") -> str | None:
    """The `text` field of a JSON strokes object, or None (a bare list of strokes has no text)."""
    try:
        obj = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{name}: not valid JSON ({e})") from None
    if isinstance(obj, dict) and "text" in obj:
        if not isinstance(obj["text"], str):
            raise DataError(f"{name}: 'text' must be a string, got {type(obj['text']).__name__}")
        return obj["text"]
    return None


def iam_ascii_lines(path: str | Path) -> list[str]:
    """The text lines of one IAM-OnDB `ascii/` form file: the lines after `CSR:`, blank lines dropped."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_TEXT_FILE_BYTES:
            raise DataError(f"{path}: larger than {MAX_TEXT_FILE_BYTES} bytes; not an IAM-OnDB ascii file")
        raw = path.read_text(encoding="latin-1")
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    _, sep, body = raw.partition("CSR:")
    if not sep:
        raise DataError(f"{path}: no 'CSR:' section; is it an IAM-OnDB ascii file?")
    return [line.strip() for line in body.splitlines() if line.strip()]


def iam_line_text(line_file: str | Path, ascii_root: str | Path) -> str | None:
    """The text of IAM-OnDB line file `F-NN.xml` from `ascii_root` (`ascii/`, searched for `F.txt`), or None
    when the form's ascii file is missing or has fewer lines."""
    match = _LINE_FILE.match(Path(line_file).stem)
    if not match:
        return None
    form, number = match["form"], int(match["line"])
    candidates = list(Path(ascii_root).rglob(f"{form}.txt"))
    if not candidates:
        return None
    lines = iam_ascii_lines(candidates[0])
    return lines[number - 1] if 1 <= number <= len(lines) else None


def line_text(path: str | Path, ascii_root: str | Path | None = None) -> str | None:
    """The text of one handwriting file, wherever its format keeps it; None when it has none."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    if path.suffix.lower() == ".json":
        return text_from_json(data, str(path))
    if path.suffix.lower() == ".xml":
        text = text_from_xml(data, str(path))
        if text is None and ascii_root is not None:
            text = iam_line_text(path, ascii_root)
        return text
    return None


def corpus_texts(corpus: Any, ascii_root: str | Path | None = None) -> dict[str, list[str | None]]:
    """The text of every line of a handwriting `Corpus` (model.data.handwriting.load_handwriting_corpus), split by
    split in the corpus's order: {"train": [...], "valid": [...], "test": [...]}, None where a line has no text.
    `ascii_root` defaults to IAM-OnDB's `ascii/` beside or above the corpus folder when there is one."""
    root = Path(corpus.root)
    base = root if root.is_dir() else root.parent
    if ascii_root is None:
        found = [d / "ascii" for d in (base, base.parent) if (d / "ascii").is_dir()]
        ascii_root = found[0] if found else None
    return {split: [line_text(base / name, ascii_root) for name in names] for split, names in corpus.names.items()}
