"""Synthetic online handwriting: Hershey script glyphs written by random "writers".

A writer is a style drawn once (font, size, width, slant, letter and word spacing, jitter, baseline
drift, pen speed); every line it writes shares that style, with small line-to-line variation, so that
who wrote a line is a real latent factor of the corpus. Lines come out as pen trajectories in
IAM-OnDB-like whiteboard coordinates (integers, y downwards) and are saved as lineStrokes XML.

How a line is written:
  * glyphs are placed left to right; a letter whose entry stroke starts where the previous letter's
    exit ended (within a small gap) continues the same stroke, as in joined-up writing;
  * small strokes (i dots) are written after the rest of the word, as people do;
  * segments are cut into pen samples `speed` font units apart (a faster writer gives fewer points);
  * smooth noise (an AR(1) walk), slant (a shear), scale, and a tilted, wavy baseline are applied.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass
from xml.sax.saxutils import quoteattr

import numpy as np

from .hershey import BASELINE, Glyph

DEMO_FONTS = ("cursive", "scripts")
UNIT = 10.0  # output (whiteboard) units per font unit at size 1: x-height ~ 90 units, like IAM-OnDB's scale
JOIN_GAP = 1.5  # font units: an exit and an entry this close are joined without lifting the pen
DOT_SIZE = 2.5  # font units: strokes no larger than this are dots, written after the word


@dataclass(frozen=True)
class Writer:
    """One writer's style. Lengths are in font units (cap height 21, x-height about 9)."""

    id: str
    font: str
    size: float  # overall scale
    aspect: float  # extra horizontal stretch
    slant: float  # shear: x += slant * height above the baseline (tan of the slant angle)
    letter_spacing: float  # added between letters
    word_spacing: float  # width of a space
    jitter: float  # std of the smooth positional noise
    drift: float  # std of the baseline's angle (radians) and scale of its waviness
    speed: float  # distance between pen samples

    def to_dict(self) -> dict:
        return asdict(self)


def draw_writer(rng: np.random.Generator, writer_id: str, fonts: tuple[str, ...] = DEMO_FONTS) -> Writer:
    """A random writer; the ranges are wide enough that styles differ at a glance."""
    return Writer(
        id=writer_id,
        font=str(rng.choice(fonts)),
        size=float(np.exp(rng.normal(0.0, 0.2))),
        aspect=float(rng.uniform(0.8, 1.25)),
        slant=float(np.tan(np.radians(rng.uniform(-8.0, 30.0)))),
        letter_spacing=float(rng.uniform(-0.5, 2.5)),
        word_spacing=float(rng.uniform(6.0, 14.0)),
        jitter=float(rng.uniform(0.05, 0.35)),
        drift=float(rng.uniform(0.0, 0.04)),
        speed=float(rng.uniform(1.3, 2.4)),
    )


def _densify(points: np.ndarray, step: float) -> np.ndarray:
    """Keep the vertices, add evenly spaced samples so that no two consecutive points are > step apart."""
    out = [points[:1]]
    for a, b in itertools.pairwise(points):
        n = max(1, math.ceil(float(np.hypot(*(b - a))) / step))
        t = np.arange(1, n + 1)[:, None] / n
        out.append(a + t * (b - a))
    return np.concatenate(out)


def _layout(text: str, glyphs: dict[str, Glyph], writer: Writer) -> list[np.ndarray]:
    """Strokes of a line in font units (y down), in writing order, joined where letters connect."""
    strokes: list[np.ndarray] = []
    cursor = 0.0
    joinable = False  # whether the last stroke ended with a letter's exit the next letter may continue
    for word in text.split(" "):
        dots: list[np.ndarray] = []
        for ch in word:
            g = glyphs.get(ch) or glyphs["?"]
            placed = [s + np.array([cursor - g.left, 0.0]) for s in g.strokes]
            # Entry stroke first (the one starting nearest the left bearing at the joining height),
            # the others in the font's order.
            entry = np.array([cursor, 4.0])
            first = int(np.argmin([np.hypot(*(s[0] - entry)) for s in placed])) if placed else 0
            placed = placed[first : first + 1] + placed[:first] + placed[first + 1 :]
            for s in placed:
                extent = float(np.ptp(s, axis=0).max()) if len(s) > 1 else 0.0
                if extent <= DOT_SIZE and len(placed) > 1:
                    dots.append(s)
                    continue
                gap = float(np.hypot(*(s[0] - strokes[-1][-1]))) if joinable and strokes else math.inf
                if gap <= JOIN_GAP + max(writer.letter_spacing, 0.0):
                    strokes[-1] = np.concatenate([strokes[-1], s])
                else:
                    strokes.append(s)
                joinable = True
            cursor += g.advance + writer.letter_spacing
        strokes.extend(dots)
        joinable = False
        cursor += writer.word_spacing - writer.letter_spacing
    return strokes


def write_line(
    text: str, glyphs: dict[str, Glyph], writer: Writer, rng: np.random.Generator, origin: tuple[float, float]
) -> list[np.ndarray]:
    """Pen trajectory of `text` by `writer` -> strokes of (x, y, t) points: whiteboard units (integers,
    y down) and seconds. `rng` draws this line's variation and noise; `origin` is the baseline start."""
    # This line's small departures from the writer's habits.
    size = writer.size * math.exp(rng.normal(0.0, 0.03)) * UNIT
    slant = writer.slant + rng.normal(0.0, 0.03)
    angle = rng.normal(0.0, writer.drift)
    wave_amp, wave_len, wave_phase = rng.uniform(0, 30 * writer.drift), rng.uniform(60, 160), rng.uniform(0, 2 * np.pi)
    step = writer.speed * math.exp(rng.normal(0.0, 0.05))

    out = []
    t = 0.0
    for s in _layout(text, glyphs, writer):
        p = _densify(s, step)
        # Smooth noise: an AR(1) walk, so that neighbouring samples wobble together like a hand.
        noise = np.zeros_like(p)
        e = rng.normal(0.0, writer.jitter * math.sqrt(1 - 0.9**2), size=p.shape)
        for k in range(len(p)):
            noise[k] = (0.9 * noise[k - 1] if k else 0.0) + e[k]
        p = p + noise
        x, up = p[:, 0], BASELINE - p[:, 1]  # height above the baseline, up positive
        x = (x + slant * up) * writer.aspect
        up = up + wave_amp * np.sin(2 * np.pi * x / wave_len + wave_phase)
        xr, yr = x * math.cos(angle) - up * math.sin(angle), x * math.sin(angle) + up * math.cos(angle)
        X = np.round(origin[0] + size * xr)
        Y = np.round(origin[1] - size * yr)
        times = t + 0.01 * np.arange(len(p))
        t = float(times[-1]) + rng.uniform(0.05, 0.25)  # pen up for a moment between strokes
        out.append(np.stack([X, Y, times], axis=1))
    return out


def line_strokes_xml(strokes: list[np.ndarray], writer_id: str, text: str, form_id: str, start_time: float) -> str:
    """An IAM-OnDB-style lineStrokes document for one line; writer and text go in a General element."""
    pts = np.concatenate([s[:, :2] for s in strokes])
    (x0, y0), (x1, y1) = pts.min(axis=0), pts.max(axis=0)
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        "<WhiteboardCaptureSession>",
        "  <WhiteboardDescription>",
        '    <SensorLocation corner="top_left"/>',
        f'    <DiagonallyOppositeCoords x="{int(x1) + 100}" y="{int(y1) + 100}"/>',
        f'    <VerticallyOppositeCoords x="{int(x0) - 100}" y="{int(y1) + 100}"/>',
        f'    <HorizontallyOppositeCoords x="{int(x1) + 100}" y="{int(y0) - 100}"/>',
        "  </WhiteboardDescription>",
        "  <General>",
        f"    <Form id={quoteattr(form_id)} writerID={quoteattr(writer_id)}/>",
        f"    <Transcription><TextLine text={quoteattr(text)}/></Transcription>",
        "  </General>",
        "  <StrokeSet>",
    ]
    for s in strokes:
        t = s[:, 2] + start_time
        lines.append(f'    <Stroke colour="black" start_time="{t[0]:.3f}" end_time="{t[-1]:.3f}">')
        lines.extend(
            f'      <Point x="{int(x)}" y="{int(y)}" time="{tt:.3f}"/>' for (x, y), tt in zip(s[:, :2], t, strict=True)
        )
        lines.append("    </Stroke>")
    lines += ["  </StrokeSet>", "</WhiteboardCaptureSession>", ""]
    return "\n".join(lines)
