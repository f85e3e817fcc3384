"""Sample speech (WAV) or handwriting (SVG) from a checkpoint, or plot the latent analysis of a file.

    python -m model.sample checkpoints/VRNN-GMM.safetensors --out speech.wav --seconds 2 --seed 0
    python -m model.sample checkpoints/hw-VRNN-GMM.safetensors --out lines.svg --num 3 --bias 0.5
    python -m model.sample checkpoints/VRNN-GMM.safetensors --analyze input.wav --out latent.png

The functions below are the reusable core (the HTTP service calls them):

    model, meta = load(path, device="cpu")
    raws = generate(model, meta, num=2, seconds=2.0, seed=0)      # list of raw (T, D) arrays
    wav = render_sample(meta, raws[0])                             # WAV bytes or SVG text
    analysis, x_raw = analyze_file(model, meta, "input.wav")      # or the file's bytes
"""

from __future__ import annotations

import argparse
import math
import secrets
import sys
from pathlib import Path
from typing import Any

import numpy as np

from . import cli, defaults

DEFAULT_SECONDS = 2.0  # the paper's Figure 3 samples are 2.0 s long
DEFAULT_HANDWRITING_STEPS = 700  # about one IAM-OnDB line (DESIGN.md's service default)
MAX_NUM = 1000
MAX_STEPS = 1_000_000
MAX_SECONDS = 3600.0
SPEECH_SUFFIXES = (".wav",)
HANDWRITING_SUFFIXES = (".svg", ".json")


class SampleError(ValueError):
    """A bad argument, file or checkpoint: the CLI prints the message and exits with status 2."""


# Reusable core -----------------------------------------------------------------------------------


def pick_device(name: str = "auto") -> str:
    """ "auto" -> "cuda" when PyTorch sees a GPU, else "cpu"; "cuda" without a GPU is an error."""
    from .runtime import resolve_device

    if name not in ("auto", "cpu", "cuda"):
        raise SampleError(f"device must be auto, cpu or cuda, got {name!r}")
    try:
        return resolve_device(name).type
    except ValueError as e:
        raise SampleError(str(e)) from None


def norm_stats(meta: dict[str, Any], source: str = "checkpoint"):
    """The checkpoint's NormStats, checked against its model config."""
    from .data import DataError, NormStats

    if "normalisation" not in meta:
        raise SampleError(
            f"{source}: its JSON has no 'normalisation' stats, so samples cannot be mapped back to "
            "audio or pen offsets (checkpoints written by `python -m model.train` have them)"
        )
    try:
        stats = NormStats.from_dict(meta["normalisation"])
    except DataError as e:
        raise SampleError(f"{source}: {e}") from None
    cfg = meta["config"]
    if stats.modality != cfg.get("modality") or stats.frame_size != cfg.get("x_dim"):
        raise SampleError(
            f"{source}: normalisation stats ({stats.modality}, frame size {stats.frame_size}) do not match the "
            f"model ({cfg.get('modality')}, x_dim {cfg.get('x_dim')})"
        )
    return stats


def sample_rate(meta: dict[str, Any]) -> int:
    rate = meta.get("sample_rate", defaults.SAMPLE_RATE)
    if isinstance(rate, bool) or not isinstance(rate, int) or rate <= 0:
        raise SampleError(f"checkpoint metadata: sample_rate must be a positive integer, got {rate!r}")
    return rate


def load(path: str | Path, device: str = "cpu"):
    """Load a checkpoint for sampling -> (model in eval mode, metadata). Never unpickles.

    Raises SampleError (a ValueError) naming the file when it is missing or not a usable checkpoint."""
    from .checkpoint import CheckpointError, load_checkpoint

    p = Path(path)
    weights = p.with_suffix(".safetensors") if p.suffix in (".json", ".safetensors") else Path(f"{p}.safetensors")
    if not weights.exists() and not weights.with_suffix(".json").exists():
        raise SampleError(f"{path}: no such checkpoint (expected NAME.safetensors with NAME.json beside it)")
    try:
        model, meta = load_checkpoint(path, device=device)
    except CheckpointError as e:
        raise SampleError(str(e)) from None
    norm_stats(meta, str(path))
    if meta["config"].get("modality") == "speech":
        sample_rate(meta)
    return model, meta


def steps_for(meta: dict[str, Any], seconds: float | None = None, steps: int | None = None) -> int:
    """Number of time steps to generate: `steps` if given, else `seconds` of speech (rounded up to whole
    frames), else the default (2.0 s of speech, 700 pen steps of handwriting)."""
    cfg = meta["config"]
    speech = cfg["modality"] == "speech"
    if steps is not None and seconds is not None:
        raise SampleError("give either seconds or steps, not both")
    if steps is not None:
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
            raise SampleError(f"steps must be a whole number from 1 to {MAX_STEPS}, got {steps!r}")
        return steps
    if seconds is not None and not speech:
        raise SampleError("seconds applies to speech; give handwriting a number of steps")
    if not speech:
        return DEFAULT_HANDWRITING_STEPS
    seconds = DEFAULT_SECONDS if seconds is None else seconds
    if not (isinstance(seconds, int | float) and math.isfinite(seconds) and 0 < seconds <= MAX_SECONDS):
        raise SampleError(f"seconds must be a number above 0 and at most {MAX_SECONDS:g}, got {seconds!r}")
    return max(1, math.ceil(seconds * sample_rate(meta) / cfg["x_dim"] - 1e-9))


def read_input(meta: dict[str, Any], source: str | Path | bytes, name: str | None = None) -> np.ndarray:
    """An input for the checkpoint's modality -> raw (T, D) frames or offsets (not normalised).

    Speech: WAV/FLAC (resampled to the model's rate, mixed to mono) cut into frames. Handwriting:
    IAM-OnDB XML, JSON strokes or offsets, or a .npy (T, 3) array. `source` is a path or the bytes."""
    from .data import DataError, frames_from_audio, load_audio, read_handwriting
    from .data.handwriting import load_handwriting_file

    cfg = meta["config"]
    label = name or (str(source) if isinstance(source, str | Path) else "input data")
    if isinstance(source, str | Path) and not Path(source).is_file():
        raise SampleError(f"{label}: no such file")
    try:
        if cfg["modality"] == "speech":
            wave = load_audio(source, sample_rate(meta), name=label)
            x = frames_from_audio(wave, cfg["x_dim"])
            if len(x) == 0:
                raise SampleError(f"{label}: shorter than one frame ({cfg['x_dim']} samples)")
            return x
        if isinstance(source, bytes | bytearray):
            return read_handwriting(bytes(source), label)
        return load_handwriting_file(source, label)
    except DataError as e:
        raise SampleError(str(e)) from None


def _generator(model, seed: int):
    import torch

    return torch.Generator(device=model.device).manual_seed(int(seed))


def generate(
    model,
    meta: dict[str, Any],
    num: int = 1,
    steps: int | None = None,
    seconds: float | None = None,
    seed: int | None = None,
    temperature: float = 1.0,
    bias: float = 0.0,
    mean: bool = False,
    prime: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Draw `num` sequences -> list of raw (T, D) float32 arrays: speech frames (flatten one with
    `.reshape(-1)` for the waveform, floats in [-1, 1] about) or handwriting offsets (dx, dy, pen), y up.

    `mean=True` gives the decoder mean instead of a sample (the paper's sampling script saved that).
    `prime` is raw (T0, D) data (from `read_input`) read through the model first; the result holds
    only the continuation. The same `seed` gives the same arrays on the same device; seed None
    draws a fresh one."""
    import torch

    if isinstance(num, bool) or not isinstance(num, int) or not 1 <= num <= MAX_NUM:
        raise SampleError(f"num must be a whole number from 1 to {MAX_NUM}, got {num!r}")
    n_steps = steps_for(meta, seconds, steps)
    stats = norm_stats(meta)
    seed = secrets.randbits(63) if seed is None else seed
    primed = None
    if prime is not None:
        prime = np.asarray(prime)
        if prime.ndim != 2 or prime.shape[1] != meta["config"]["x_dim"] or len(prime) == 0:
            raise SampleError(f"prime must be raw data of shape (T, {meta['config']['x_dim']}), got {prime.shape}")
        primed = torch.as_tensor(np.asarray(stats.preprocess(prime), dtype=np.float32))
    try:
        with torch.no_grad():
            y = model.sample(
                num_samples=num,
                steps=n_steps,
                temperature=temperature,
                generator=_generator(model, seed),
                prime=None if primed is None else primed.to(model.device),
                bias=bias,
                mean=mean,
            )
    except ValueError as e:  # temperature, bias: the model checks them
        raise SampleError(str(e)) from None
    raw = stats.denormalise(y.detach().to("cpu", torch.float32).numpy())
    return [np.ascontiguousarray(r, dtype=np.float32) for r in raw]


def render_sample(meta: dict[str, Any], raw: np.ndarray, fmt: str | None = None, **svg_options: Any) -> bytes | str:
    """One raw sample -> file contents: WAV bytes for speech; for handwriting SVG text (fmt "svg",
    the default; `svg_options` go to `render.handwriting_svg`) or JSON offsets (fmt "json")."""
    from . import render

    if meta["config"]["modality"] == "speech":
        return render.wav_bytes(np.asarray(raw).reshape(-1), sample_rate(meta))
    if fmt in (None, "svg"):
        return render.handwriting_svg(raw, **svg_options)
    if fmt == "json":
        import json

        rows = [[round(float(dx), 4), round(float(dy), 4), int(pen > 0.5)] for dx, dy, pen in np.asarray(raw)]
        return json.dumps(rows, separators=(",", ":")) + "\n"
    raise SampleError(f"handwriting can be written as svg or json, not {fmt!r}")


def analyze_file(model, meta: dict[str, Any], source: str | Path | bytes, name: str | None = None):
    """Read an input file (path or bytes) and run the latent analysis -> (LatentAnalysis of a batch of
    one, raw (T, D) input). The analysis uses posterior means, so it is deterministic."""
    import torch

    if not model.config.has_latent:
        raise SampleError(f"{model.config.name} has no latent variables to analyse; use a VRNN or VRNN-I checkpoint")
    x_raw = read_input(meta, source, name)
    x = torch.as_tensor(np.asarray(norm_stats(meta).preprocess(x_raw), dtype=np.float32)).unsqueeze(0)
    with torch.no_grad():
        analysis = model.analyze(x.to(model.device))
    return analysis, x_raw


def latent_png(model, meta: dict[str, Any], analysis, x_raw: np.ndarray, label: str | None = None) -> bytes:
    """The Figure 2 plot of `analyze_file`'s result, titled with the model's name and the input."""
    from . import render

    title = meta.get("name", model.config.name) + (f": {label}" if label else "")
    rate = sample_rate(meta) if meta["config"]["modality"] == "speech" else defaults.SAMPLE_RATE
    return render.latent_figure(analysis, x_raw, meta["config"]["modality"], sample_rate=rate, title=title)


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
    p.add_argument("--mean", action="store_true", help="write the decoder mean instead of a sample")
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
        if args.mean:
            given.append("--mean")
        if given:
            raise SampleError(f"--analyze plots an input; it takes no sampling options ({', '.join(given)})")
        out = _check_suffix(out, (".png",), "latent-analysis figures")
        if not Path(args.analyze).is_file():
            raise SampleError(f"{args.analyze}: no such file")
    model, meta = load(args.checkpoint, pick_device(args.device))
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
    prime = None
    if args.prime is not None:
        prime = read_input(meta, args.prime)
    raws = generate(
        model,
        meta,
        num=num,
        steps=args.steps,
        seconds=args.seconds,
        seed=seed,
        temperature=1.0 if args.temperature is None else args.temperature,
        bias=args.bias or 0.0,
        mean=args.mean,
        prime=prime,
    )
    fmt = out.suffix.lower().lstrip(".")
    lines = []
    kind = "the decoder mean (--mean), not a sample" if args.mean else "a sample (not the decoder mean)"
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
