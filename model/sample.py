"""Sample speech (WAV) or handwriting (SVG) from a checkpoint, write text with a text checkpoint, or plot the
latent analysis of a file.

    python -m model.sample checkpoints/VRNN-GMM.safetensors --out speech.wav --seconds 2 --seed 0
    python -m model.sample checkpoints/hw-VRNN-GMM.safetensors --out lines.svg --num 3 --bias 0.5
    python -m model.sample checkpoints/hw-text-VRNN-GMM.safetensors --out note.svg --text 'hello\\nworld' --style w058
    python -m model.sample checkpoints/VRNN-GMM.safetensors --analyze input.wav --out latent.png

A thin command line over `model.inference` (load, generate, generate_text, render_sample, text_sample_json,
analyze_file, latent_png) and `model.styles` (a text checkpoint's named styles).
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from pathlib import Path
from typing import Any

import numpy as np

from . import cli, defaults, render
from .conditional import MAX_STEPS_PER_CHAR, TextVRNN
from .inference import (
    DEFAULT_HANDWRITING_STEPS,
    DEFAULT_SECONDS,
    analyze_file,
    generate,
    generate_text,
    latent_png,
    load,
    read_input,
    render_sample,
    sample_rate,
    text_sample_json,
)
from .inference import InferenceError as SampleError
from .inference import steps_for as steps_for  # re-exported: the command line's tests use it
from .styles import Style, StylesError, load_styles, styles_path
from .text import LineError, UnsupportedCharactersError, check_lines, normalise
from .wordlm import WordLM, WordLMError, load_wordlm, wordlm_path

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
  python -m model.sample checkpoints/handwriting-text-vrnn-gmm.safetensors --out note.svg --text 'hello\\nworld'
      a text checkpoint writes the text, one line per \\n, the lines one under another (as the service does);
      --style NAME writes it in one of the checkpoint's named styles (NAME.styles.json, `python -m model.styles`)
  python -m model.sample checkpoints/handwriting-text-vrnn-gmm.safetensors --out note.json --text 'hello' \\
          --prime mine.xml --prime-text 'the text of my line' --bias 1 --seed 3
      in the style of your own line (its text too); .json holds each line's offsets, as the service's format=json
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
    p.add_argument(
        "--bias",
        type=NON_NEGATIVE,
        metavar="B",
        help=f"Graves' sampling bias, >= 0 (0 = none; default {defaults.HANDWRITING_BIAS:g} for handwriting, "
        f"{defaults.TEXT_BIAS:g} with --text, 0 for speech: the most legible settings measured)",
    )
    p.add_argument("--mean", action="store_true", help="write and feed back the decoder mean instead of a sample")
    p.add_argument(
        "--component-mean",
        action="store_true",
        help="feed back a sample but write the mean of the mixture component it was drawn from (the "
        "authors' sampling script; the pen bit is the drawn one)",
    )
    p.add_argument(
        "--prime",
        metavar="FILE",
        help="input to continue from (WAV/FLAC, or XML/JSON strokes); with --text, a line to write in the style "
        "of (give its text as --prime-text)",
    )
    p.add_argument(
        "--text",
        metavar="TEXT",
        help="with a text checkpoint: the text to write; a newline (or \\n) starts the next line, and the lines "
        "are stacked in one SVG (--steps caps each line; default: the model's cap, "
        f"{MAX_STEPS_PER_CHAR} pen steps per character)",
    )
    p.add_argument(
        "--style", metavar="NAME", help="with --text: write it in this named style of the checkpoint (NAME.styles.json)"
    )
    p.add_argument("--prime-text", metavar="TEXT", help="with --text and --prime: the text written in the --prime line")
    p.add_argument(
        "--invent",
        action="store_true",
        help="with a text checkpoint and no --text: each file writes a line the checkpoint's word model makes up "
        "(NAME.wordlm.json, `python -m model.wordlm`) from its seed, short enough for --steps (default "
        f"{DEFAULT_HANDWRITING_STEPS}): what the service writes for a handwriting request without text",
    )
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
        options = ("num", "seconds", "steps", "seed", "temperature", "bias", "prime", "text", "style", "prime_text")
        given = [f"--{n.replace('_', '-')}" for n in options if getattr(args, n) is not None]
        flags = (("--mean", args.mean), ("--component-mean", args.component_mean), ("--invent", args.invent))
        given += [f for f, on in flags if on]
        if given:
            raise SampleError(f"--analyze plots an input; it takes no sampling options ({', '.join(given)})")
        out = _check_suffix(out, (".png",), "latent-analysis figures")
        if not Path(args.analyze).is_file():
            raise SampleError(f"{args.analyze}: no such file")
    else:
        _check_text_options(args, out)
    model, meta = load(args.checkpoint, args.device, text=args.analyze is None)
    cfg = meta["config"]
    name = meta.get("name", model.config.name)
    speech = cfg["modality"] == "speech"
    if isinstance(model, TextVRNN):
        if args.text is None and not args.invent:
            raise SampleError(
                f"{args.checkpoint}: {name} writes text; give the text to write with --text TEXT (a newline or \\n "
                "starts the next line), or --invent to write lines its word model makes up"
            )
        return _write_text(args, model, meta, out)
    if args.text is not None or args.style is not None or args.prime_text is not None or args.invent:
        text_options = (
            ("--text", args.text),
            ("--style", args.style),
            ("--prime-text", args.prime_text),
            ("--invent", True if args.invent else None),
        )
        text_flags = ", ".join(f for f, v in text_options if v is not None)
        raise SampleError(
            f"{args.checkpoint}: {name} does not write text (its config has no alphabet); remove "
            f"{text_flags} to sample it freely, or give a text checkpoint (`python -m model.train "
            "--condition text`)"
        )

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
        bias=(0.0 if speech else defaults.HANDWRITING_BIAS) if args.bias is None else args.bias,
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


def _check_text_options(args: argparse.Namespace, out: Path) -> None:
    """Refuse combinations of --text, --style, --prime and --prime-text that need no checkpoint to judge."""
    if args.prime_text is not None and args.prime is None:
        raise SampleError(
            "--prime-text is the text written in the --prime line; give that line as --prime FILE too, or remove "
            "--prime-text"
        )
    if args.invent and args.text is not None:
        raise SampleError("--invent makes up the line to write, and --text gives it; remove one of them")
    if args.text is None and not args.invent:
        if args.style is not None:
            raise SampleError("--style is the style to write --text in; give --text (the text to write) too")
        return
    if out.suffix.lower() in SPEECH_SUFFIXES:
        raise SampleError(
            f"--out {out}: --text writes handwriting, as .svg (the lines one under another) or .json (each line's "
            f"pen offsets), not {out.suffix}"
        )
    if args.style is not None and args.prime is not None:
        raise SampleError(
            "--style primes the model with one of the checkpoint's own lines, and --prime with --prime-text with "
            "yours; give one of them: remove --style, or remove --prime and --prime-text"
        )


def _text_lines(text: str, alphabet: str, option: str) -> list[str]:
    """`text` split into lines at newlines (real ones, or the two characters \\n) and normalised as the model reads
    them; SampleError naming every character outside `alphabet` at once, or an empty line."""
    lines = [normalise(line) for line in text.replace("\\n", "\n").split("\n")]
    try:
        check_lines(lines, alphabet)
    except LineError as e:  # empty or too long
        where = f" (line {e.line} of {e.lines})" if e.lines > 1 else ""
        raise SampleError(f"{option}{where}: {e}") from None
    except UnsupportedCharactersError as e:
        raise SampleError(f"{option}: {e}") from None
    return lines


def _word_model(args: argparse.Namespace, name: str, alphabet: str) -> WordLM:
    """The checkpoint's word model for --invent; SampleError when it has none or it cannot be used."""
    try:
        lm = load_wordlm(args.checkpoint, alphabet)
    except WordLMError as e:
        raise SampleError(f"--invent: {e}") from None
    if lm is None:
        raise SampleError(
            f"--invent: {name} has no word model ({wordlm_path(args.checkpoint)}); make one with `python -m "
            f"model.wordlm {args.checkpoint} --data CORPUS`, or give the text with --text"
        )
    return lm


def _style(args: argparse.Namespace, name: str, alphabet: str) -> Style:
    """The checkpoint's named style --style; SampleError listing its styles when it has no such one."""
    try:
        styles = load_styles(args.checkpoint, alphabet)
    except StylesError as e:
        raise SampleError(str(e)) from None
    if args.style in styles:
        return styles[args.style]
    own = "or write in the style of a line of your own: --prime FILE --prime-text TEXT"
    if styles:
        raise SampleError(f"{name} has no style {args.style!r}; pick one of its styles: {', '.join(styles)}; {own}")
    raise SampleError(
        f"{name} has no named styles (no {styles_path(args.checkpoint)}; `python -m model.styles` adds them from a "
        f"corpus): remove --style, {own}"
    )


def _write_text(args: argparse.Namespace, model: TextVRNN, meta: dict[str, Any], out: Path) -> list[str]:
    """--text with a text checkpoint: each file the lines of --text (model.inference.generate_text) as one SVG, the
    lines one under another as the service draws them, or as the service's JSON; file i with seed --seed + i."""
    name = meta.get("name", model.config.name)
    out = _check_suffix(out, HANDWRITING_SUFFIXES, "handwriting samples")
    if args.seconds is not None:
        raise SampleError("--seconds applies to speech checkpoints; --steps caps each line of --text")
    alphabet = model.config.alphabet
    lm = _word_model(args, name, alphabet) if args.invent else None
    lines = [] if lm is not None else _text_lines(args.text, alphabet, "--text")
    budget = args.steps or DEFAULT_HANDWRITING_STEPS  # a made-up line fits it
    cap = args.steps if lm is None or args.steps != DEFAULT_HANDWRITING_STEPS else None  # the service's rule
    prime, prime_text, primed = None, None, ""
    if args.style is not None:
        style = _style(args, name, alphabet)
        prime, prime_text, primed = style.offsets, style.text, f", in style {style.name} (writer {style.writer})"
    if args.prime is not None:
        if args.prime_text is None:
            raise SampleError(
                f"--prime {args.prime}: {name} writes text, so a prime needs the text written in it: give it as "
                "--prime-text TEXT, or remove --prime"
            )
        prime_lines = _text_lines(args.prime_text, alphabet, "--prime-text")
        if len(prime_lines) > 1:
            raise SampleError("--prime-text is the text of the one --prime line; give it without line breaks")
        prime_text = prime_lines[0]
        prime, primed = read_input(meta, args.prime), f", in the style of {args.prime}"
    num = args.num or 1
    seed = secrets.randbits(31) if args.seed is None else args.seed
    if seed + num - 1 > cli.MAX_SEED:
        raise SampleError(f"--num {num} files take seeds --seed to --seed + {num - 1}; give a smaller --seed")
    mean = "component-mean" if args.component_mean else args.mean
    output = mean if isinstance(mean, str) else "mean" if mean else "sample"
    fmt = out.suffix.lower().lstrip(".")
    report = []
    for i, path in enumerate(numbered_paths(out, num)):
        if lm is not None:
            made = lm.line(seed + i, budget)
            if made is None:
                raise SampleError(f"--steps {budget} leave no room for a word of {name}'s made-up lines; give more")
            lines = [made]
        try:
            raws, finished = generate_text(
                model,
                meta,
                lines,
                max_steps=cap,
                seed=seed + i,
                temperature=1.0 if args.temperature is None else args.temperature,
                bias=defaults.TEXT_BIAS if args.bias is None else args.bias,
                mean=mean,
                prime=prime,
                prime_text=prime_text,
            )
        except UnsupportedCharactersError as e:  # checked above; kept for a prime text the model reads differently
            raise SampleError(f"--text: {e}") from None
        if not all(np.isfinite(raw).all() for raw in raws):
            raise SampleError(f"{args.checkpoint}: cannot render its sample (non-finite pen offsets, seed {seed + i})")
        if fmt == "json":
            doc = text_sample_json(name, seed + i, lines, cap, finished, raws, output)
            if lm is not None:
                doc["invented"] = True
            data = json.dumps(doc, separators=(",", ":")) + "\n"
        else:
            try:
                data = render.handwriting_lines_svg(raws)
            except ValueError as e:
                raise SampleError(f"{args.checkpoint}: cannot render its sample ({e})") from None
        _write(path, data)
        size = f"{len(lines)} line{'s' if len(lines) > 1 else ''} of handwriting, {sum(len(r) for r in raws)} pen steps"
        if lm is not None:
            size += f" ({lines[0]!r})"
        cut = [str(n) for n, done in enumerate(finished, 1) if not done]
        if cut:
            limit = f"--steps {cap}" if cap else f"the model's cap ({MAX_STEPS_PER_CHAR} steps a character)"
            which = f"line {cut[0]} before its" if len(cut) == 1 else f"lines {', '.join(cut)} before their"
            size += f"; {limit} cut {which} last character"
        report.append(f"wrote {path}: {size}")
    kind = {
        "sample": "a sample (not the decoder mean)",
        "mean": "the decoder mean (--mean), not a sample",
        "component-mean": "the drawn components' means of a sample (--component-mean)",
    }[output]
    seeds = f"seed {seed}" if num == 1 else f"seeds {seed} to {seed + num - 1}, one per file in order"
    again = "it" if num == 1 else "them"
    what = "a line its word model made up" if lm is not None else "--text"
    report.append(f"each is {kind} from {name} writing {what} ({seeds}{primed}; --seed {seed} reproduces {again})")
    return report


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
