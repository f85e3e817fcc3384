"""How legible the demo corpus's own hand is to Tesseract: real words against non-words of the same letters.

    python scripts/legibility_ceiling.py [--data data/handwriting-demo] [--lines 24] [--seed 5]

Writes --lines lines of the corpus's grammar with the corpus's own writers and hand (model.demo: the glyphs,
slant, size, spacing and smooth hand noise that made the corpus; writers taken in turn from the manifest), then
the same lines with their letters shuffled across the line (non-words of the same letters and word lengths), then
random lower-case letters in the same word lengths. Each line is rendered and read as `python -m model.quality
handwriting` does (`model.quality.render_png`, `tesseract --psm 13`) and the mean word confidence of each set is
printed, with the first readings. This is the ceiling of the measure for a model whose letters are perfect: a
sample that writes no real words cannot read better than the non-word sets (docs/RESULTS.md, issue 9).

Exit status: 0 done, 1 Tesseract missing, 2 bad arguments (no manifest at --data).
"""

from __future__ import annotations

import argparse
import json
import random
import string
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model.demo.hershey import load_font  # noqa: E402
from model.demo.sentences import text_line  # noqa: E402
from model.demo.writers import DEMO_FONTS, Writer, line_strokes_xml, write_line  # noqa: E402
from model.quality import load_handwriting_file, read_png, render_png, tesseract_available  # noqa: E402


def variants(text: str, rng: random.Random) -> dict[str, str]:
    """The line, its letters shuffled across its words (word lengths kept), and random letters in those lengths."""
    words = text.split()
    letters = [c for c in text if not c.isspace()]
    rng.shuffle(letters)
    shuffled, k = [], 0
    for w in words:
        shuffled.append("".join(letters[k : k + len(w)]))
        k += len(w)
    random_letters = ["".join(rng.choice(string.ascii_lowercase) for _ in w) for w in words]
    return {"words": text, "shuffled letters": " ".join(shuffled), "random letters": " ".join(random_letters)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=ROOT / "data" / "handwriting-demo", help="a handwriting demo corpus")
    p.add_argument("--lines", type=int, default=24, help="lines per set (default 24)")
    p.add_argument("--seed", type=int, default=5)
    args = p.parse_args(argv)
    manifest_path = args.data / "manifest.json"
    if not manifest_path.is_file():
        p.error(f"no {manifest_path}: build the corpus first (python -m model.prepare handwriting-demo --out DIR)")
    if not tesseract_available():
        print("error: tesseract is not installed (apt-get install tesseract-ocr)", file=sys.stderr)
        return 1
    writers = [Writer(**w) for w in json.loads(manifest_path.read_text())["writers"]]
    fonts = {name: load_font(name) for name in DEMO_FONTS}
    rng = random.Random(args.seed)
    scores: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="vrnn-ceiling-") as tmp:
        for i in range(args.lines):
            writer = writers[i % len(writers)]
            for name, text in variants(text_line(rng), rng).items():
                strokes = write_line(
                    text, fonts[writer.font], writer, np.random.default_rng([args.seed, i]), (200, 700)
                )
                path = Path(tmp) / "line.xml"
                path.write_text(line_strokes_xml(strokes, writer.id, text, "ceiling", 0.0), encoding="utf-8")
                reading = read_png(render_png(load_handwriting_file(path)))
                scores.setdefault(name, []).append(reading.confidence)
                if i < 2:
                    print(f"{name:>16}: {text!r} read as {reading.text!r} ({reading.confidence:.0f})")
    print(f"mean Tesseract word confidence over {args.lines} lines of the corpus's own hand:")
    for name, values in scores.items():
        print(f"  {name:>16}: {np.mean(values):5.1f} (sd {np.std(values):.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
