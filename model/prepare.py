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
import os
import sys
import time
from pathlib import Path
from typing import Any

from . import cli
from .demo import defaults
from .demo.corpora import (
    HANDWRITING_TEXTS,
    PrepareError,
    build_handwriting_demo,
    build_speech_demo,
    extra_seeds_problem,
)

SIZES = ("small", "full")
KINDS = {"speech-demo": "wav", "handwriting-demo": "lineStrokes"}


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
    shared: dict[str, Any] = {"parents": [common], "epilog": EPILOG, "formatter_class": parser.formatter_class}
    speech = sub.add_parser(
        "speech-demo",
        **shared,
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
    handwriting = sub.add_parser(
        "handwriting-demo",
        **shared,
        help="lines written by random writers in Hershey script fonts, as IAM-OnDB XML",
        description="Lines of a few words written with the Hershey cursive/script fonts (Debian: "
        "hershey-fonts-data, or PyPI Hershey-Fonts) by random writers (slant, size, spacing, jitter, "
        "baseline drift, speed), saved in IAM-OnDB's lineStrokes XML format.",
    )
    handwriting.add_argument(
        "--texts",
        choices=HANDWRITING_TEXTS,
        default="grammar",
        help="what the lines say: grammar (the shipped models' corpus) or alphabet (the same grammar with numbers, "
        "capitals, j, z, apostrophes, quotes and brackets put in, so that every character of a text model's "
        "default alphabet occurs; for --condition text) (default: %(default)s)",
    )
    handwriting.add_argument(
        "--extra-train-seeds",
        type=cli.seed,
        nargs="+",
        default=[],
        metavar="N",
        help="also write the corpora of these seeds (their writers named v001..., u001..., a letter each) as training "
        "material only: "
        "form lists beside the corpus (trainset.txt, testset_v.txt, testset_t.txt) keep the validation and test "
        "writers that --seed's corpus alone gets, so models trained on either are scored on the same lines "
        "(the shipped handwriting VRNN-GMM's last training: --extra-train-seeds 1 2; docs/RESULTS.md)",
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
    extra = tuple(getattr(args, "extra_train_seeds", []))
    problem = extra_seeds_problem(args.seed, extra, "--seed")
    if problem:
        parser.error(f"--extra-train-seeds {problem}")
    _check_out(parser, args.out, data_dir, args.force)
    show = not args.quiet and args.size == "full"
    start = time.perf_counter()
    try:
        if args.corpus == "speech-demo":
            m = build_speech_demo(args.out, args.size, args.seed, args.synth, args.jobs, progress=show)
            what = f"{m['utterances']} utterances, {m['total_seconds'] / 60:.1f} min of audio ({m['synthesiser']})"
        else:
            m = build_handwriting_demo(
                args.out, args.size, args.seed, progress=show, texts=args.texts, extra_train_seeds=extra
            )
            extra_lines = sum(e["lines"] for e in m.get("extra_train_seeds", []))
            extra_points = sum(e["points"] for e in m.get("extra_train_seeds", []))
            what = f"{m['lines'] + extra_lines} lines, {m['points'] + extra_points} points, {len(m['writers'])} writers"
            if extra_lines:
                extra_writers = sum(e["writers"] for e in m["extra_train_seeds"])
                what += f" ({extra_lines} lines by {extra_writers} writers for training only)"
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
