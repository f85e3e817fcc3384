"""Sample speech (WAV) or handwriting (SVG) from a checkpoint, or plot the latent analysis of a file.

    python -m model.sample checkpoints/VRNN-GMM.safetensors --out speech.wav --seconds 2 --seed 0
    python -m model.sample checkpoints/hw-VRNN-GMM.safetensors --out lines.svg --num 3 --bias 0.5
    python -m model.sample checkpoints/VRNN-GMM.safetensors --analyze input.wav --out latent.png

A thin command line over `model.inference` (load, generate, render_sample, analyze_file, latent_png).
"""

from __future__ import annotations

import argparse
import secrets
import sys
from pathlib import Path

from . import cli
from .inference import (
    DEFAULT_HANDWRITING_STEPS,
    DEFAULT_SECONDS,
    analyze_file,
    generate,
    latent_png,
    load,
    read_input,
    render_sample,
    sample_rate,
)
from .inference import InferenceError as SampleError
from .inference import steps_for as steps_for  # re-exported: the command line's tests use it

SPEECH_SUFFIXES = (".wav",)
HANDWRITING_SUFFIXES = (".svg", ".json")


def numbered_paths(out: Path, num: int) -> list[Path]:
    """FILE for one output; FILE's stem_0, stem_1, ... (same suffix) for several."""
    if num == 1:
        return [out]
    return [out.with_name(f"{out.stem}_{i}{out.suffix}") for i in range(num)]


# Command line ------------------------------------------------------------------------------------

EXAMPLES = """\
examples:
  python -m model.sample checkpoints/VRNN-GMM.safetensors --out speech.wav
      2.0 s of speech, 16-bit PCM WAV at the model's sample rate
  python -m model.sample checkpoints/VRNN-GMM.safetensors --out speech.wav --num 3 --seconds 1.5 --seed 7
      speech_0.wav, speech_1.wav, speech_2.wav (the same seed gives byte-identical files)
  python -m model.sample checkpoints/VRNN-Gauss.safetensors --out mean.wav --mean
      the decoder mean rather than a sample (what the paper's sampling script saved)
  python -m model.sample checkpoints/VRNN-GMM.safetensors --out cont.wav --prime start.wav
      continue start.wav (the output holds the continuation only)
  python -m model.sample checkpoints/handwriting-VRNN-GMM.safetensors --out line.svg --steps 700 --bias 0.5
      one line of handwriting as SVG; --bias > 0 writes more neatly (Graves 2013)
  python -m model.sample checkpoints/handwriting-VRNN-GMM.safetensors --out line.json
      the raw pen offsets [[dx, dy, pen], ...] (y up, pen = 1 ends a stroke) instead of SVG
  python -m model.sample checkpoints/VRNN-GMM.safetensors --analyze input.wav --out latent.png
      the paper's Figure 2 for input.wav: delta_t, KL per step and latent dimension, the waveform
      (handwriting checkpoints take IAM-OnDB XML or JSON strokes); needs a VRNN or VRNN-I model

exit status: 0 done, 2 bad arguments, missing or unreadable files, or an unusable checkpoint.
"""


POSITIVE = cli.finite_number(0, low_open=True)
NON_NEGATIVE = cli.finite_number(0, low_open=False)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(  # its own errors exit with status 2 too, after the usage line
        prog="python -m model.sample",
        description=(
            "Sample speech (WAV) or handwriting (SVG) from a VRNN/RNN checkpoint, or, with --analyze, plot the "
            "latent analysis of an input file (the paper's Figure 2) as PNG. Samples are mapped back to raw "
            "audio or pen offsets with the checkpoint's normalisation stats."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", metavar="CKPT", help="NAME.safetensors (its NAME.json must be beside it)")
    p.add_argument(
        "--out",
        required=True,
        metavar="FILE",
        help="output: .wav (speech), .svg or .json (handwriting), .png (--analyze); with --num N > 1, "
        "FILE's stem gets _0 ... _N-1",
    )
    p.add_argument("--num", type=cli.positive_int, metavar="N", help="number of samples (default 1)")
    length = p.add_mutually_exclusive_group()
    length.add_argument(
        "--seconds", type=POSITIVE, metavar="S", help=f"speech duration (default {DEFAULT_SECONDS:g} s)"
    )
    length.add_argument(
        "--steps",
        type=cli.positive_int,
        metavar="N",
        help=f"time steps (frames of speech, pen points of handwriting; default {DEFAULT_HANDWRITING_STEPS} "
        "for handwriting)",
    )
    p.add_argument("--seed", type=cli.seed, metavar="N", help="random seed; the same seed gives identical files")
    p.add_argument("--temperature", type=POSITIVE, metavar="T", help="scales output stds, divides mixture logits (1)")
    p.add_argument("--bias", type=NON_NEGATIVE, metavar="B", help="Graves' sampling bias, >= 0 (0 = none)")
    p.add_argument("--mean", action="store_true", help="write and feed back the decoder mean instead of a sample")
    p.add_argument(
        "--component-mean",
        action="store_true",
        help="feed back a sample but write the mean of the mixture component it was drawn from (the "
        "authors' sampling script; the pen bit is the drawn one)",
    )
    p.add_argument("--prime", metavar="FILE", help="input to continue from (WAV/FLAC, or XML/JSON strokes)")
    p.add_argument("--analyze", metavar="INPUT", help="plot the latent analysis of INPUT to --out (a .png)")
    p.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to run (default: %(default)s)"
    )
    return p


def _check_suffix(out: Path, allowed: tuple[str, ...], what: str) -> Path:
    if out.suffix == "":
        return out.with_suffix(allowed[0])
    if out.suffix.lower() not in allowed:
        raise SampleError(f"--out {out}: {what} are written as {' or '.join(allowed)}, not {out.suffix}")
    return out


def _write(path: Path, data: bytes | str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            path.write_text(data, encoding="utf-8")
        else:
            path.write_bytes(data)
    except OSError as e:
        raise SampleError(f"{path}: cannot write ({e.strerror or e})") from None


def run(args: argparse.Namespace) -> list[str]:
    """Do what the parsed arguments ask; returns the lines to print. Raises SampleError."""
    out = Path(args.out)
    if args.analyze is not None:
        options = ("num", "seconds", "steps", "seed", "temperature", "bias", "prime")
        given = [f"--{n}" for n in options if getattr(args, n) is not None]
        given += [f for f, on in (("--mean", args.mean), ("--component-mean", args.component_mean)) if on]
        if given:
            raise SampleError(f"--analyze plots an input; it takes no sampling options ({', '.join(given)})")
        out = _check_suffix(out, (".png",), "latent-analysis figures")
        if not Path(args.analyze).is_file():
            raise SampleError(f"{args.analyze}: no such file")
    model, meta = load(args.checkpoint, args.device)
    cfg = meta["config"]
    name = meta.get("name", model.config.name)
    speech = cfg["modality"] == "speech"

    if args.analyze is not None:
        analysis, x_raw = analyze_file(model, meta, args.analyze)
        _write(out, latent_png(model, meta, analysis, x_raw, Path(args.analyze).name))
        frames = int(analysis.mask[0].sum().item())
        what = f"{frames} frames" if speech else f"{frames} pen steps"
        return [f"wrote {out}: latent analysis of {args.analyze} ({what}) by {name}"]

    out = _check_suffix(out, SPEECH_SUFFIXES if speech else HANDWRITING_SUFFIXES, f"{cfg['modality']} samples")
    if args.seconds is not None and not speech:
        raise SampleError("--seconds applies to speech checkpoints; use --steps for handwriting")
    num = args.num or 1
    seed = secrets.randbits(31) if args.seed is None else args.seed
    prime = None if args.prime is None else read_input(meta, args.prime)
    raws = generate(
        model,
        meta,
        num=num,
        steps=args.steps,
        seconds=args.seconds,
        seed=seed,
        temperature=1.0 if args.temperature is None else args.temperature,
        bias=args.bias or 0.0,
        mean="component-mean" if args.component_mean else args.mean,
        prime=prime,
    )
    fmt = out.suffix.lower().lstrip(".")
    lines = []
    kind = "the decoder mean (--mean), not a sample" if args.mean else "a sample (not the decoder mean)"
    if args.component_mean:
        kind = "the drawn components' means of a sample (--component-mean)"
    for path, raw in zip(numbered_paths(out, num), raws, strict=True):
        try:
            data = render_sample(meta, raw, None if speech else fmt)
        except ValueError as e:  # e.g. non-finite offsets from a diverged model
            raise SampleError(f"{args.checkpoint}: cannot render its sample ({e})") from None
        _write(path, data)
        if speech:
            size = f"{raw.size / sample_rate(meta):.2f} s of speech at {sample_rate(meta)} Hz"
        else:
            strokes = int((raw[:, 2] > 0.5).sum()) + int(raw[-1, 2] <= 0.5)
            size = f"handwriting, {len(raw)} pen steps in {strokes} strokes"
        lines.append(f"wrote {path}: {size}")
    primed = f", continuing {args.prime}" if args.prime else ""
    lines.append(f"each is {kind} from {name} (seed {seed}{primed}; --seed {seed} reproduces it)")
    return lines


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        lines = run(args)
    except SampleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
