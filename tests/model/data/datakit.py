"""Small data files written on the fly for the data-layer tests (imported by them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf


def tone(rate: int, seconds: float, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_audio(path: Path, wave: np.ndarray, rate: int, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave, rate, **kw)
    return path


def iam_xml(strokes: list[list[tuple[float, float]]], prolog: str = "") -> str:
    """An IAM-OnDB lineStrokes document with the given strokes of (x, y) points."""
    body = []
    for k, stroke in enumerate(strokes):
        body.append(f'  <Stroke colour="black" start_time="{k}.0" end_time="{k}.5">')
        body += [f'    <Point x="{x}" y="{y}" time="{k}.{i}"/>' for i, (x, y) in enumerate(stroke)]
        body.append("  </Stroke>")
    return (
        '<?xml version="1.0" encoding="ISO-8859-1"?>\n' + prolog + "<WhiteboardCaptureSession>\n"
        '<WhiteboardDescription><SensorLocation corner="top_left"/></WhiteboardDescription>\n'
        "<StrokeSet>\n" + "\n".join(body) + "\n</StrokeSet>\n</WhiteboardCaptureSession>\n"
    )


def random_strokes(rng: np.random.Generator, n_strokes: int = 3, points: int = 20) -> list[list[tuple[int, int]]]:
    """Strokes of small moves, each starting a little to the right of the last."""
    strokes, x0 = [], 1000
    for _ in range(n_strokes):
        steps = rng.integers(-8, 9, size=(points, 2))
        xy = np.cumsum(steps, axis=0) + np.array([x0, 500])
        strokes.append([(int(a), int(b)) for a, b in xy])
        x0 = int(xy[-1, 0]) + 30
    return strokes


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<WhiteboardCaptureSession><StrokeSet><Stroke>
<Point x="1" y="2" time="&lol9;"/>
</Stroke></StrokeSet></WhiteboardCaptureSession>
"""

EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<WhiteboardCaptureSession><StrokeSet><Stroke>
<Point x="1" y="2" time="&xxe;"/>
</Stroke></StrokeSet></WhiteboardCaptureSession>
"""
