"""Build the demo corpora reproducibly from a seed: `python -m model.prepare --help`.

    python -m model.prepare speech-demo --out data/speech-demo [--size small|full] [--seed N]
    python -m model.prepare handwriting-demo --out data/handwriting-demo [--size small|full] [--seed N]

speech-demo:       one synthetic speaker (festival's cmu_us_slt_arctic_hts voice, or espeak-ng) reading
                   sentences from a seeded grammar -> wav/uttNNNNN.wav, 16 kHz mono 16-bit PCM.
handwriting-demo:  lines of a few words written with Hershey script fonts by random writers ->
                   lineStrokes/wNNN/wNNN-LLL.xml in IAM-OnDB's lineStrokes format.
Both write manifest.json (seed, tools, texts, writers) and are read back by the loaders of model.data.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from . import cli
from .data import defaults
from .data.errors import DataError

SIZES = ("small", "full")
KINDS = {"speech-demo": "wav", "handwriting-demo": "lineStrokes"}
FESTIVAL_BATCH = 10  # sentences per festival process: amortises its start-up, keeps the progress bar moving


class PrepareError(RuntimeError):
    """A missing tool or a failed build; main() prints it and exits with status 1."""


# Speech ------------------------------------------------------------------------------------------


def build_speech_demo(
    out: Path,
    size: str = "small",
    seed: int = defaults.DEMO_SEED,
    synthesiser: str = "auto",
    jobs: int = 2,
    progress: bool = False,
    utterances: int | None = None,
) -> dict[str, Any]:
    """Synthesise the speech demo into out/wav/ and out/manifest.json; returns the manifest."""
    import soundfile as sf

    from .data.sentences import sentences
    from .data.speech import load_audio
    from .data.tts import SynthesiserError, choose_synthesiser, synthesise

    try:
        synth = choose_synthesiser(synthesiser)
    except SynthesiserError as e:
        raise PrepareError(str(e)) from None
    n = utterances or defaults.SPEECH_DEMO_UTTERANCES[size]
    texts = sentences(n, seed)
    rate = defaults.SAMPLE_RATE
    stage = _stage(out)
    try:
        (stage / "wav").mkdir()
        native = Path(tempfile.mkdtemp(prefix="native-", dir=stage))
        batches = [list(range(i, min(i + FESTIVAL_BATCH, n))) for i in range(0, n, FESTIVAL_BATCH)]
        records: list[dict[str, Any]] = [{} for _ in range(n)]

        def run(batch: list[int]) -> list[int]:
            synthesise([texts[i] for i in batch], [native / f"{i:05d}.wav" for i in batch], synth)
            return batch

        bar = _bar(n, "synthesising", progress)
        try:
            with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
                for batch in pool.map(run, batches):
                    for i in batch:
                        wave = load_audio(native / f"{i:05d}.wav", rate)  # resampled to 16 kHz
                        peak = float(np.abs(wave).max())
                        if peak > 0.99:  # resampling can overshoot a full-scale input a little
                            wave = wave * (0.99 / peak)
                        name = f"wav/utt{i + 1:05d}.wav"
                        sf.write(stage / name, wave, rate, subtype="PCM_16")
                        records[i] = {"file": name, "text": texts[i], "seconds": round(len(wave) / rate, 3)}
                    bar.update(len(batch))
        except (SynthesiserError, DataError) as e:
            raise PrepareError(str(e)) from None
        finally:
            bar.close()
        shutil.rmtree(native)
        seconds = sum(r["seconds"] for r in records)
        manifest = {
            "kind": "speech-demo",
            "size": size,
            "seed": seed,
            "synthesiser": synth,
            "voice": defaults.FESTIVAL_VOICE if synth == "festival" else "en-us",
            "sample_rate": rate,
            "utterances": n,
            "total_seconds": round(seconds, 2),
            "chunks_of_0.5s": int(sum(math.floor(r["seconds"] / defaults.CHUNK_SECONDS) for r in records)),
            "files": records,
        }
        _publish(stage, out, "wav", manifest)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return manifest


# Handwriting -------------------------------------------------------------------------------------


def build_handwriting_demo(
    out: Path,
    size: str = "small",
    seed: int = defaults.DEMO_SEED,
    progress: bool = False,
    lines: int | None = None,
    writers: int | None = None,
) -> dict[str, Any]:
    """Write the handwriting demo into out/lineStrokes/ and out/manifest.json; returns the manifest."""
    from .data.hershey import font_source, load_font
    from .data.sentences import text_line
    from .data.writers import DEMO_FONTS, draw_writer, line_strokes_xml, write_line

    n_lines = lines or defaults.HANDWRITING_DEMO_LINES[size]
    n_writers = min(writers or defaults.HANDWRITING_DEMO_WRITERS[size], n_lines)
    try:
        fonts = {name: load_font(name) for name in DEMO_FONTS}
    except DataError as e:
        raise PrepareError(str(e)) from None
    style_rng = np.random.default_rng([seed, 0])
    people = [draw_writer(style_rng, f"w{k + 1:03d}") for k in range(n_writers)]
    text_rng = random.Random(f"lines-{seed}")
    stage = _stage(out)
    try:
        records: list[dict[str, Any]] = []
        bar = _bar(n_lines, "writing", progress)
        for i in range(n_lines):
            k, j = i % n_writers, i // n_writers  # writers take turns, so any prefix of lines has them all
            w = people[k]
            rng = np.random.default_rng([seed, 1, i])
            text = text_line(text_rng)
            origin = (float(rng.uniform(100, 400)), float(rng.uniform(600, 900)))
            strokes = write_line(text, fonts[w.font], w, rng, origin)
            name = f"lineStrokes/{w.id}/{w.id}-{j + 1:03d}.xml"
            (stage / name).parent.mkdir(parents=True, exist_ok=True)
            (stage / name).write_text(
                line_strokes_xml(strokes, w.id, text, f"{w.id}-{j + 1:03d}", 100.0 * i), encoding="utf-8"
            )
            records.append({"file": name, "writer": w.id, "text": text, "points": int(sum(len(s) for s in strokes))})
            bar.update(1)
        bar.close()
        manifest = {
            "kind": "handwriting-demo",
            "size": size,
            "seed": seed,
            "fonts": list(DEMO_FONTS),
            "font_source": font_source(),
            "lines": n_lines,
            "points": int(sum(r["points"] for r in records)),
            "writers": [w.to_dict() for w in people],
            "files": records,
        }
        _publish(stage, out, "lineStrokes", manifest)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return manifest


# Output folder -----------------------------------------------------------------------------------


def _stage(out: Path) -> Path:
    """A fresh folder inside `out` to build in; `_publish` moves its results into place, so that an
    interrupted build never leaves a corpus that looks complete."""
    out.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=".partial-", dir=out))


def _publish(stage: Path, out: Path, data_dir: str, manifest: dict[str, Any]) -> None:
    (stage / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    for name in (data_dir, "manifest.json"):
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        (stage / name).rename(target)


def _bar(total: int, what: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=what, unit="item", disable=not enabled, file=sys.stderr)


# Command line ------------------------------------------------------------------------------------

_S, _L, _W = (
    defaults.SPEECH_DEMO_UTTERANCES["full"],
    defaults.HANDWRITING_DEMO_LINES["full"],
    defaults.HANDWRITING_DEMO_WRITERS["full"],
)
EPILOG = f"""\
sizes:
  small  a few seconds; a handful of files (what the tests use)
  full   sized so that the seven demo models can train in about an hour on 2 CPU cores:
         speech {_S} sentences (~18 min of audio, ~2000 chunks of 0.5 s; under a minute to build),
         handwriting {_L} lines by {_W} writers (~1.6 M pen points; ~10 s to build)

The same --seed (and the same synthesiser version) gives the same corpus. The output folder gets
wav/ or lineStrokes/ and manifest.json; it must be empty or missing unless --force is given, which
replaces only those. Exit status: 0 done, 2 bad arguments, 1 a missing tool or a failed build.

examples:
  python -m model.prepare speech-demo --out data/speech-demo
  python -m model.prepare handwriting-demo --out data/handwriting-demo --size small --seed 7
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m model.prepare",
        description="Build a demo corpus (synthetic speech or handwriting) reproducibly from a seed.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="corpus", required=True, metavar="{speech-demo,handwriting-demo}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder to write the corpus into")
    common.add_argument(
        "--size", choices=SIZES, default="full", help="small (seconds, for tests) or full (default: %(default)s)"
    )
    common.add_argument(
        "--seed", type=cli.seed, default=defaults.DEMO_SEED, metavar="N", help="random seed (default: %(default)s)"
    )
    common.add_argument("--force", action="store_true", help="replace a corpus already in DIR")
    common.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    speech = sub.add_parser(
        "speech-demo",
        parents=[common],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="sentences read by one synthetic speaker, as 16 kHz WAV files",
        description="Sentences from a seeded grammar read by festival's cmu_us_slt_arctic_hts voice "
        "(Debian: festival festvox-us-slt-hts) or by espeak-ng, written as 16 kHz mono WAV files.",
    )
    speech.add_argument(
        "--synth",
        choices=("auto", "festival", "espeak-ng"),
        default="auto",
        help="synthesiser; auto prefers festival with the slt voice (default: %(default)s)",
    )
    speech.add_argument(
        "--jobs",
        type=cli.positive_int,
        default=min(2, os.cpu_count() or 1),
        metavar="N",
        help="synthesiser processes run at once (default: %(default)s)",
    )
    sub.add_parser(
        "handwriting-demo",
        parents=[common],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="lines written by random writers in Hershey script fonts, as IAM-OnDB XML",
        description="Lines of a few words written with the Hershey cursive/script fonts (Debian: "
        "hershey-fonts-data, or PyPI Hershey-Fonts) by random writers (slant, size, spacing, jitter, "
        "baseline drift, speed), saved in IAM-OnDB's lineStrokes XML format.",
    )
    return parser


def _check_out(parser: argparse.ArgumentParser, out: Path, data_dir: str, force: bool) -> None:
    if out.exists() and not out.is_dir():
        parser.error(f"--out {out} is a file; give a folder")
    if out.is_dir() and not force:
        leftovers = [p.name for p in out.iterdir() if not p.name.startswith(".partial-")]
        if leftovers:
            parser.error(
                f"--out {out} is not empty ({', '.join(sorted(leftovers)[:3])}...); "
                f"choose an empty folder or pass --force to replace {data_dir}/ and manifest.json"
            )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    data_dir = KINDS[args.corpus]
    _check_out(parser, args.out, data_dir, args.force)
    show = not args.quiet and args.size == "full"
    start = time.perf_counter()
    try:
        if args.corpus == "speech-demo":
            m = build_speech_demo(args.out, args.size, args.seed, args.synth, args.jobs, progress=show)
            what = f"{m['utterances']} utterances, {m['total_seconds'] / 60:.1f} min of audio ({m['synthesiser']})"
        else:
            m = build_handwriting_demo(args.out, args.size, args.seed, progress=show)
            what = f"{m['lines']} lines, {m['points']} points, {len(m['writers'])} writers"
    except PrepareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; nothing was published", file=sys.stderr)
        return 130
    if not args.quiet:
        print(f"wrote {what} to {args.out} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
