"""Hershey stroke fonts: glyphs as pen strokes, read from Debian's hershey-fonts-data (.jhf files) or,
when that is absent, from the fonts bundled in the PyPI package Hershey-Fonts.

Glyph coordinates are the fonts' own: integers, y growing downwards, baseline at y = 9, cap line at
y = -12; `left` and `right` are the glyph's side bearings (its advance is right - left).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.errors import DataError

FONT_DIRS = ("/usr/share/hershey-fonts", "/usr/local/share/hershey-fonts")
FONT_DIR_ENV = "HERSHEY_FONTS_DIR"
INSTALL_HINT = (
    "install the Debian package hershey-fonts-data (apt-get install hershey-fonts-data) or pip install Hershey-Fonts"
)
BASELINE = 9


@dataclass(frozen=True)
class Glyph:
    strokes: tuple[np.ndarray, ...]  # each (N, 2) float64, font units, y down
    left: int
    right: int

    @property
    def advance(self) -> int:
        return self.right - self.left


def _val(c: str) -> int:
    return ord(c) - ord("R")


def parse_jhf(text: str) -> dict[str, Glyph]:
    """The text of a .jhf font -> {character: Glyph}; glyphs are in ASCII order from the space (32).

    A record is: 5 columns of id, 3 of vertex count, then that many coordinate pairs (the first pair
    is the left and right bearing; " R" lifts the pen); long records continue on the next lines."""
    glyphs: dict[str, Glyph] = {}
    lines = text.splitlines()
    i, code = 0, 32
    while i < len(lines):
        record = lines[i]
        i += 1
        if not record.strip():
            continue
        try:
            n = int(record[5:8])
        except ValueError:
            raise DataError(f"not a Hershey .jhf font: bad vertex count in {record[:20]!r}") from None
        while len(record) < 8 + 2 * n and i < len(lines):
            record += lines[i]
            i += 1
        body = record[8 : 8 + 2 * n]
        if len(body) < 2:
            raise DataError(f"not a Hershey .jhf font: record {record[:20]!r} is too short")
        strokes: list[np.ndarray] = []
        current: list[tuple[int, int]] = []
        for k in range(2, len(body) - 1, 2):
            pair = body[k : k + 2]
            if pair == " R":
                if current:
                    strokes.append(np.asarray(current, dtype=np.float64))
                current = []
            else:
                current.append((_val(pair[0]), _val(pair[1])))
        if current:
            strokes.append(np.asarray(current, dtype=np.float64))
        glyphs[chr(code)] = Glyph(tuple(strokes), _val(body[0]), _val(body[1]))
        code += 1
    if not glyphs:
        raise DataError("not a Hershey .jhf font: no glyphs")
    return glyphs


def font_dir() -> Path | None:
    """The first folder holding .jhf fonts: $HERSHEY_FONTS_DIR, then Debian's place."""
    candidates = [os.environ[FONT_DIR_ENV]] if os.environ.get(FONT_DIR_ENV) else []
    for d in [*candidates, *FONT_DIRS]:
        if Path(d, "cursive.jhf").is_file():
            return Path(d)
    return None


def load_font(name: str) -> dict[str, Glyph]:
    """Glyphs of the font `name` (e.g. "cursive", "scripts") from the first source that has it."""
    d = font_dir()
    if d is not None and (d / f"{name}.jhf").is_file():
        return parse_jhf((d / f"{name}.jhf").read_text(encoding="ascii", errors="replace"))
    try:
        from HersheyFonts import HersheyFonts  # PyPI Hershey-Fonts, optional
    except ImportError:
        raise DataError(f"Hershey font {name!r} not found: {INSTALL_HINT}") from None
    font = HersheyFonts()
    if name not in font.default_font_names:
        raise DataError(f"Hershey font {name!r} is not among the PyPI Hershey-Fonts fonts")
    font.load_default_font(name)
    glyphs = {}
    for code in range(32, 127):
        for g in font.glyphs_for_text(chr(code)):
            left, right = g.left_offset, g.left_offset + g.char_width
            strokes = tuple(np.asarray(s, dtype=np.float64) for s in g.strokes if len(s))
            glyphs[chr(code)] = Glyph(strokes, left, right)
    return glyphs


def font_source() -> str:
    """Where fonts come from, for the corpus manifest."""
    d = font_dir()
    if d is not None:
        return str(d)
    try:
        import HersheyFonts  # noqa: F401
    except ImportError:
        return "none"
    return "PyPI Hershey-Fonts"
