"""Does a text-conditioned handwriting checkpoint write what it is told, in the style it is shown? Measured.

    python -m model.textquality runs/long/hw-text-vrnn-gmm.safetensors                      # library, all checks
    python -m model.textquality CKPT --num 6 --styles 3 --per-style 2 --png-dir /tmp/tq     # quick, with renders
    python -m model.textquality CKPT --data data/handwriting-alphabet                       # + overlap check
    python -m model.textquality CKPT --url http://localhost:8000 --out report.json          # the service's output

The issue "Write this text" sets two targets; this tool measures both and writes a JSON report (stdout, or --out)
and a short summary (stderr).

**Legibility** (target: a character error rate of at most 0.30 on texts the model never saw). The model writes each
of `HELD_OUT_TEXTS` (24 short English lines in model.text.DEFAULT_ALPHABET, of a structure and vocabulary the demo
corpus's grammar, model/demo/sentences.py, does not produce; `--texts FILE` replaces them) with seed `--seed + i`;
each line is rendered (`model.quality.render_png`), read by Tesseract as one text line (`--psm 13`,
`model.quality.read_png`) and scored with `model.quality.char_error_rate` (edit distance over the text's length,
case and spacing folded). The report has each line's text, reading, CER, Tesseract's confidence, whether the
model's stopping rule fired (`finished`) and its points, and the mean and median CER and the fraction finished.
With `--data CORPUS` the corpus's line texts are read and the held-out texts that occur verbatim in it are counted
per split; one in the training split makes the tool refuse (exit 2) unless `--allow-overlap`: a memorised line
says nothing about writing new text.

**Style** (target: a sample primed with one writer's line is closer to that writer's slant and size than to the
other writers'). The checkpoint's named styles (NAME.styles.json, `model.styles`: one real line and its text per
test writer) are the writers. For each of the first `--styles` styles, `--per-style` held-out texts are written
primed with the style's line and text, and the same texts with the same seed unprimed. Every line, real or written,
is measured by `model.quality.line_style`: the median over its windows of `WINDOW_POINTS` pen points of the slant
(degrees from vertical of the up-down strokes) and the size (height of the up and down strokes, in input units).
The writers' real lines are first thinned as the model saw its training lines (`point_stride`), so that a window
spans as much ink in a real line as in a written one. Slant and size are standardised by their standard deviation
across the writers' real lines, and a line's distance to a writer is the Euclidean distance of the standardised
(slant, size) pairs. For each primed sample: its distance to its own writer, against the mean distance to the other
writers; reported are the fraction of samples closer to their own writer than to the average other one and the
mean own/other ratio (below 1: the style carried over). The unprimed samples get the same two numbers, each scored
against the writer of its primed counterpart, whose style it was *not* given: that is the chance level (about
1/2 and 1 when the style does nothing; a model whose unprimed lines happen to resemble one writer can move it).
Two features of one line each are a coarse fingerprint: compare primed with unprimed, not with 100 %.

`--url http://HOST:PORT` takes the samples from a running service (POST /generate/handwriting?format=json, with
the style by name) instead of loading the checkpoint: the file is still read for its alphabet, point stride and
styles, and the service is asked for the model of the same name (`--model` to change it).

Exit status: 0 done (whether or not the targets are met: see the report), 2 bad arguments, checkpoint, texts,
corpus overlap or a service that refuses, 1 Tesseract missing or failing.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import cli, defaults
from .checkpoint import CheckpointError, read_text_metadata
from .data.normalise import subsample_points
from .quality import WINDOW_POINTS, Reading, char_error_rate, line_style, read_png, render_png, tesseract_available
from .styles import MAX_STYLES, Style, load_styles
from .text import UnsupportedCharactersError, normalise

# Lines none of which the demo grammar writes (present tense, first person, questions and commands of words it lacks).
HELD_OUT_TEXTS: tuple[str, ...] = (
    "my cat sleeps on the sofa",
    "we drink tea every evening",
    "rain falls on the tin roof",
    "she sings while he cooks",
    "a fox runs through snow",
    "the sun sets behind hills",
    "pass me the salt, please",
    "Birds build nests in spring",
    "he forgot his umbrella again",
    "our dog chases every ball",
    "Where is the nearest shop?",
    "I like apples and plums.",
    "the wind blew my hat off",
    "ships sail to distant ports",
    "she reads books at night",
    "cold soup tastes odd",
    "Mum bakes bread on Sundays.",
    "kids play football outside",
    "the milk went sour today",
    "Turn left at the corner!",
    "his phone rang twice",
    "we walked home in the rain",
    "fresh fish costs more now",
    "my sister writes poems",
)
TARGET_CER = 0.30
STYLE_SEED_OFFSET = 1000  # style samples use seeds from --seed + 1000, apart from the legibility lines'
MAX_PER_STYLE = 10  # the service's bound on lines per request (worker.limits.MAX_TEXT_LINES)
MAX_TEXTS = 1000
SERVICE_TIMEOUT_S = 600.0
POLL_S = 0.5

# (texts, seed, style or None) -> (raw (T, 3) offsets per text, whether each line's stopping rule fired)
Sampler = Callable[[list[str], int, Style | None], tuple[list[np.ndarray], list[bool]]]
Reader = Callable[[bytes], Reading]


class TextQualityError(ValueError):
    """A bad argument, text file, corpus overlap or service answer; the message says what to change."""


# Where the samples come from ----------------------------------------------------------------------------------------


def library_sampler(
    model: Any, meta: dict[str, Any], bias: float = defaults.TEXT_BIAS, temperature: float = 1.0
) -> Sampler:
    """Samples from a loaded text model (`model.inference.load(path, text=True)`) with `generate_text`."""
    from .inference import generate_text

    def sample(texts: list[str], seed: int, style: Style | None) -> tuple[list[np.ndarray], list[bool]]:
        prime = None if style is None else style.offsets
        prime_text = None if style is None else style.text
        return generate_text(
            model, meta, texts, seed=seed, bias=bias, temperature=temperature, prime=prime, prime_text=prime_text
        )

    return sample


def check_url(url: str) -> str:
    """`http(s)://HOST[:PORT][/PREFIX]` without a trailing slash; TextQualityError otherwise."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise TextQualityError(f"--url {url!r}: give the service's base URL, such as http://localhost:8000")
    try:
        parts.port  # noqa: B018 (raises ValueError for a bad port)
    except ValueError:
        raise TextQualityError(f"--url {url!r}: the port must be a number from 1 to 65535") from None
    return url.rstrip("/")


def service_sampler(
    url: str,
    model: str | None = None,
    bias: float = defaults.TEXT_BIAS,
    temperature: float = 1.0,
    api_key: str | None = None,
    timeout_s: float = SERVICE_TIMEOUT_S,
) -> Sampler:
    """Samples from a running service: POST /generate/handwriting?format=json (a style by its name), following a
    202 to /jobs/{id} until the result is there. A refusal or a failed job raises TextQualityError with the
    service's message."""
    base = check_url(url)
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if api_key:
        headers["X-API-Key"] = api_key

    def call(method: str, target: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any], Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(target, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                return response.status, dict(response.headers), json.loads(response.read() or b"null")
        except urllib.error.HTTPError as e:
            detail = e.read().decode("utf-8", "replace")[:500]
            raise TextQualityError(f"{method} {target}: HTTP {e.code}: {detail}") from None
        except (urllib.error.URLError, OSError, json.JSONDecodeError) as e:
            raise TextQualityError(f"{method} {target}: {getattr(e, 'reason', e)}") from None

    def sample(texts: list[str], seed: int, style: Style | None) -> tuple[list[np.ndarray], list[bool]]:
        body: dict[str, Any] = {"text": "\n".join(texts), "seed": seed, "bias": bias, "temperature": temperature}
        if model:
            body["model"] = model
        if style is not None:
            body["style"] = style.name
        target = f"{base}/generate/handwriting?format=json"
        status, head, doc = call("POST", target, body)
        deadline = time.monotonic() + timeout_s
        while status == 202:  # queued: poll the job, then read its result
            job = urllib.parse.urljoin(target, head.get("Location") or doc.get("location", ""))
            state = doc
            while state.get("status") not in ("finished", "failed"):
                if time.monotonic() > deadline:
                    raise TextQualityError(f"{job}: no result after {timeout_s:g} s")
                time.sleep(POLL_S)
                _, _, state = call("GET", job)
            if state["status"] == "failed":
                raise TextQualityError(f"{job}: the job failed: {state.get('error')}")
            status, head, doc = call("GET", urllib.parse.urljoin(target, state["result_url"]))
        try:
            offsets = [np.asarray(o, dtype=np.float32).reshape(-1, 3) for o in doc["offsets"]]
            finished = [bool(f) for f in doc["finished"]]
        except (TypeError, KeyError, ValueError) as e:
            raise TextQualityError(f"POST {target}: not a text model's JSON answer ({e!r})") from None
        if len(offsets) != len(texts) or len(finished) != len(texts):
            raise TextQualityError(f"POST {target}: {len(offsets)} lines for {len(texts)} texts")
        return offsets, finished

    return sample


# Texts ----------------------------------------------------------------------------------------------------------------


def read_texts(path: str | Path) -> list[str]:
    """One text a line (white space folded, blank lines skipped); TextQualityError when there is none."""
    try:
        raw = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise TextQualityError(f"--texts {path}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    texts = [normalise(line) for line in raw.splitlines() if line.strip()]
    if not texts:
        raise TextQualityError(f"--texts {path}: no text in it; give one line of text per line")
    if len(texts) > MAX_TEXTS:
        raise TextQualityError(f"--texts {path}: {len(texts)} lines; at most {MAX_TEXTS}")
    return texts


def check_alphabet(texts: Sequence[str], alphabet: str) -> None:
    """UnsupportedCharactersError naming every character of `texts` that `alphabet` lacks."""
    missing = list(dict.fromkeys(c for t in texts for c in t if c not in alphabet))
    if missing:
        raise UnsupportedCharactersError(missing, alphabet)


def corpus_overlap(texts: Sequence[str], data: str | Path) -> dict[str, list[str]]:
    """{split: the texts of `texts` that a line of the handwriting corpus at `data` says verbatim (white space
    folded)}, the corpus split as `model.train` splits it."""
    from .data.handwriting import load_handwriting_corpus
    from .data.texts import corpus_texts

    by_split = corpus_texts(load_handwriting_corpus(data))
    wanted = {normalise(t): t for t in texts}
    out: dict[str, list[str]] = {}
    for split, lines in by_split.items():
        said = {normalise(t) for t in lines if t}
        out[split] = [t for key, t in wanted.items() if key in said]
    return out


# Legibility -----------------------------------------------------------------------------------------------------------


def measure_legibility(
    sample: Sampler,
    texts: Sequence[str],
    seed: int = 0,
    read: Reader | None = None,
    png_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Write each text (seed `seed + i`), render it, read it (`read`: Tesseract, `model.quality.read_png`) ->
    {"summary": ..., "lines": [...]} (module docstring); with `png_dir`, the renders and sheet.png there."""
    read = read or read_png
    lines = []
    renders = []
    for i, text in enumerate(texts):
        (offsets,), (finished,) = sample([text], seed + i, None)
        png = render_png(offsets)
        reading = read(png)
        cer = char_error_rate(reading.text, text)
        lines.append(
            {
                "text": text,
                "reading": reading.text,
                "cer": round(cer, 4),
                "confidence": round(reading.confidence, 2),
                "finished": bool(finished),
                "points": len(offsets),
                "seed": seed + i,
            }
        )
        renders.append(png)
        if png_dir is not None:
            png_dir.mkdir(parents=True, exist_ok=True)
            (png_dir / f"line-{i:02d}.png").write_bytes(png)
        if progress:
            progress(f"  {i + 1}/{len(texts)} CER {cer:.2f} {text!r} -> {reading.text!r}")
    if png_dir is not None and renders:
        contact_sheet(renders, lines, png_dir / "sheet.png")
    return {"summary": legibility_summary(lines), "lines": lines}


def legibility_summary(lines: Sequence[dict[str, Any]], target: float = TARGET_CER) -> dict[str, Any]:
    """Mean and median CER, mean confidence and the fraction finished of measured lines; `meets_target`: the mean
    CER is at most `target`."""
    if not lines:
        return {"lines": 0}
    cers = [float(line["cer"]) for line in lines]
    mean = statistics.fmean(cers)
    return {
        "lines": len(lines),
        "mean_cer": round(mean, 4),
        "median_cer": round(statistics.median(cers), 4),
        "mean_confidence": round(statistics.fmean(float(line["confidence"]) for line in lines), 2),
        "finished_fraction": round(sum(bool(line["finished"]) for line in lines) / len(lines), 4),
        "target_cer": target,
        "meets_target": mean <= target,
    }


def contact_sheet(renders: Sequence[bytes], lines: Sequence[dict[str, Any]], path: Path) -> Path:
    """All renders stacked in one PNG, each captioned with its text, Tesseract's reading and the CER."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    fig, axes = plt.subplots(len(renders), 1, figsize=(12, 1.7 * len(renders)), squeeze=False)
    for ax, png, line in zip(axes[:, 0], renders, lines, strict=True):
        ax.imshow(np.asarray(Image.open(io.BytesIO(png))), cmap="gray", vmin=0, vmax=255)
        mark = "" if line["finished"] else "  [not finished]"
        ax.set_title(
            f"text: {line['text']!r}   read: {line['reading']!r}   CER {line['cer']:.2f}{mark}", fontsize=9, loc="left"
        )
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


# Style ----------------------------------------------------------------------------------------------------------------


def style_scores(
    samples: Sequence[tuple[str, tuple[float, float] | None]], writers: dict[str, tuple[float, float]]
) -> dict[str, Any]:
    """Score samples against writers. `samples`: (the writer the sample is matched to, its (slant, size) or None when
    unmeasurable); `writers`: {writer: (slant, size) of the writer's real line}, at least two. Slant and size are
    standardised by their sd across `writers` (1 where it is 0); per sample, the distance to its writer and the mean
    distance to the others -> {"scores": [{own, other, ratio, closer} or None per sample], "measured",
    "closer_fraction", "mean_ratio"}."""
    if len(writers) < 2:
        raise ValueError("scoring styles needs at least two writers")
    ref = np.array(list(writers.values()), dtype=np.float64)
    spread = ref.std(axis=0)
    spread[spread <= 1e-12] = 1.0
    names = list(writers)
    scores: list[dict[str, Any] | None] = []
    for own, measure in samples:
        if measure is None:
            scores.append(None)
            continue
        d = np.hypot(*((np.asarray(measure) - ref) / spread).T)
        k = names.index(own)
        other = float(np.delete(d, k).mean())
        scores.append(
            {
                "own_distance": round(float(d[k]), 4),
                "other_distance": round(other, 4),
                "ratio": round(float(d[k]) / other, 4) if other > 0 else None,
                "closer": bool(d[k] < other),
            }
        )
    measured = [s for s in scores if s is not None]
    ratios = [s["ratio"] for s in measured if s["ratio"] is not None]
    return {
        "scores": scores,
        "measured": len(measured),
        "closer_fraction": round(sum(s["closer"] for s in measured) / len(measured), 4) if measured else None,
        "mean_ratio": round(statistics.fmean(ratios), 4) if ratios else None,
    }


def measure_style(
    sample: Sampler,
    styles: Sequence[Style],
    texts: Sequence[str],
    per_style: int = 3,
    seed: int = 0,
    point_stride: int = 1,
    window: int = WINDOW_POINTS,
) -> dict[str, Any]:
    """Primed against unprimed samples of each style (module docstring) -> {"writers", "scale", "primed",
    "unprimed", "samples"}; {"skipped": why} when fewer than two styles have a measurable line."""
    writers: dict[str, dict[str, Any]] = {}
    for style in styles:
        measure = line_style(subsample_points(style.offsets, point_stride), window)
        if measure is not None:
            slant, size = round(measure[0], 3), round(measure[1], 4)
            writers[style.name] = {"writer": style.writer, "text": style.text, "slant": slant, "size": size}
    if len(writers) < 2:
        return {"skipped": f"{len(writers)} of {len(styles)} style line(s) measurable; the measure needs two or more"}
    used = [s for s in styles if s.name in writers]
    refs = {name: (w["slant"], w["size"]) for name, w in writers.items()}
    rows: list[dict[str, Any]] = []
    measures: dict[bool, list[tuple[str, tuple[float, float] | None]]] = {True: [], False: []}
    for k, style in enumerate(used):
        chosen = [texts[(k * per_style + j) % len(texts)] for j in range(per_style)]
        line_seed = seed + STYLE_SEED_OFFSET + k
        for primed in (True, False):
            offsets, finished = sample(chosen, line_seed, style if primed else None)
            for text, off, fin in zip(chosen, offsets, finished, strict=True):
                measure = line_style(off, window)
                measures[primed].append((style.name, measure))
                rows.append(
                    {
                        "style": style.name,
                        "primed": primed,
                        "text": text,
                        "seed": line_seed,
                        "finished": bool(fin),
                        "points": len(off),
                        "slant": None if measure is None else round(measure[0], 3),
                        "size": None if measure is None else round(measure[1], 4),
                    }
                )
    result: dict[str, Any] = {"writers": writers}
    ref = np.array(list(refs.values()))
    spread = ref.std(axis=0)
    result["scale"] = {"slant_sd": float(spread[0]), "size_sd": float(spread[1])}
    for primed, label in ((True, "primed"), (False, "unprimed")):
        scored = style_scores(measures[primed], refs)
        result[label] = {k: v for k, v in scored.items() if k != "scores"} | {"samples": len(measures[primed])}
        for row, score in zip((r for r in rows if r["primed"] is primed), scored["scores"], strict=True):
            row.update(score or {"own_distance": None})
    result["samples"] = rows
    return result


# The whole measure ----------------------------------------------------------------------------------------------------


@dataclass
class Options:
    bias: float = defaults.TEXT_BIAS
    temperature: float = 1.0
    seed: int = 0
    num: int | None = None
    styles: int = 8
    per_style: int = 3
    png_dir: Path | None = None


def measure(
    sample: Sampler,
    texts: Sequence[str],
    styles: Sequence[Style],
    options: Options,
    point_stride: int = 1,
    read: Reader | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Legibility of the first `options.num` texts and style of `options.styles` styles -> the report's body."""
    chosen = list(texts[: options.num] if options.num else texts)
    report: dict[str, Any] = {
        "legibility": measure_legibility(sample, chosen, options.seed, read, options.png_dir, progress)
    }
    if options.styles == 0:
        report["style"] = {"skipped": "--styles 0"}
    elif not styles:
        report["style"] = {"skipped": "the checkpoint has no styles (add some with `python -m model.styles`)"}
    else:
        if progress:
            progress(
                f"  style: {min(len(styles), options.styles)} style(s) x {options.per_style} text(s), primed and not"
            )
        report["style"] = measure_style(
            sample, list(styles)[: options.styles], texts, options.per_style, options.seed, point_stride
        )
    return report


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The human summary of a report."""
    out = []
    leg = report["legibility"]["summary"]
    if leg.get("lines"):
        verdict = "met" if leg["meets_target"] else "not met"
        out.append(
            f"legibility: {leg['lines']} held-out line(s): mean CER {leg['mean_cer']:.3f} (median "
            f"{leg['median_cer']:.3f}; target <= {leg['target_cer']:.2f}: {verdict}); {leg['finished_fraction']:.0%} "
            f"finished; mean Tesseract confidence {leg['mean_confidence']:.0f}"
        )
    style = report["style"]
    if "skipped" in style:
        out.append(f"style: skipped ({style['skipped']})")
    else:

        def part(s: dict[str, Any]) -> str:
            if s["closer_fraction"] is None:
                return "none measurable"
            ratio = "n/a" if s["mean_ratio"] is None else f"{s['mean_ratio']:.2f}"
            return f"{s['closer_fraction']:.0%} closer to the writer, own/other distance {ratio}"

        p, u = style["primed"], style["unprimed"]
        out.append(
            f"style: {len(style['writers'])} writer(s), {p['samples']} primed sample(s) ({p['measured']} measurable): "
            f"{part(p)}; unprimed (chance): {part(u)}"
        )
    return out


# Command line ---------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m model.textquality",
        description="Measure a text-conditioned handwriting checkpoint against the 'Write this text' targets: "
        f"legibility (Tesseract's character error rate on held-out texts, target <= {TARGET_CER:.2f}) and style "
        "(samples primed with a writer's line closer to that writer's slant and size than to the others'). "
        "JSON report on stdout (or --out), summary on stderr. The module's docstring says what is measured.",
        epilog="examples:\n"
        "  python -m model.textquality runs/long/hw-text-vrnn-gmm.safetensors\n"
        "  python -m model.textquality CKPT --num 6 --styles 3 --per-style 2 --png-dir /tmp/tq\n"
        "  python -m model.textquality CKPT --data data/handwriting-alphabet   # refuse texts it trained on\n"
        "  python -m model.textquality CKPT --texts my-lines.txt --bias 2 --out report.json\n"
        "  python -m model.textquality CKPT --url http://localhost:8000        # measure the service's output\n"
        "exit status: 0 done, 1 Tesseract missing or failing, 2 bad arguments, checkpoint, texts, overlap or service",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", type=Path, help="a text checkpoint (NAME.safetensors with NAME.json beside it)")
    p.add_argument(
        "--texts", type=Path, help=f"a file of texts to write, one a line (default: the {len(HELD_OUT_TEXTS)} built in)"
    )
    p.add_argument("--num", type=cli.whole_number(1, MAX_TEXTS), help="use the first N texts (default: all)")
    p.add_argument(
        "--bias",
        type=cli.finite_number(0.0, False),
        default=defaults.TEXT_BIAS,
        help="sampling bias (default %(default)s: the service's default for text)",
    )
    p.add_argument(
        "--temperature", type=cli.finite_number(0.0, True), default=1.0, help="sampling temperature (default 1.0)"
    )
    p.add_argument("--seed", type=cli.whole_number(0, 2**62), default=0, help="text i uses seed+i (default 0)")
    p.add_argument(
        "--styles",
        type=cli.whole_number(0, MAX_STYLES),
        default=8,
        help="measure style with up to N of the checkpoint's styles (default 8; 0: no style measure)",
    )
    p.add_argument(
        "--per-style",
        type=cli.whole_number(1, MAX_PER_STYLE),
        default=3,
        help="held-out texts written per style, primed and unprimed (default 3)",
    )
    p.add_argument("--data", type=Path, help="the training corpus: count held-out texts it holds, refuse if trained on")
    p.add_argument("--allow-overlap", action="store_true", help="measure even when the training split holds a text")
    p.add_argument("--png-dir", type=Path, help="write each line's render and a contact sheet (sheet.png) here")
    p.add_argument("--out", type=Path, help="write the JSON report here instead of stdout")
    p.add_argument("--device", default="cpu", help="where the model runs: cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("--url", help="take the samples from a running service at this base URL (http://HOST:PORT)")
    p.add_argument("--model", help="with --url: the service's model name (default: the checkpoint's file name)")
    p.add_argument("--api-key", help="with --url: the service's X-API-Key")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.url is not None:
        try:
            args.url = check_url(args.url)
        except TextQualityError as e:
            parser.error(str(e))
    elif args.model or args.api_key:
        parser.error("--model and --api-key go with --url")
    if args.data is not None and not args.data.exists():
        parser.error(f"--data {args.data}: no such folder; give the training corpus (e.g. data/handwriting-alphabet)")
    if args.png_dir is not None and args.png_dir.exists() and not args.png_dir.is_dir():
        parser.error(f"--png-dir {args.png_dir} is a file; give a folder")
    if not tesseract_available():
        print("error: tesseract is not installed (apt-get install tesseract-ocr)", file=sys.stderr)
        return 1

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        texts = read_texts(args.texts) if args.texts else list(HELD_OUT_TEXTS)
        if args.num is not None and args.num > len(texts):
            raise TextQualityError(f"--num {args.num}, but there are only {len(texts)} texts")
        try:
            meta = read_text_metadata(args.checkpoint)
        except CheckpointError as e:
            raise TextQualityError(str(e)) from None
        alphabet = meta["config"]["alphabet"]
        check_alphabet(texts, alphabet)
        overlap = None
        if args.data is not None:
            overlap = corpus_overlap(texts, args.data)
            trained = overlap.get("train", [])
            if trained and not args.allow_overlap:
                raise TextQualityError(
                    f"{len(trained)} of the texts are lines of {args.data}'s training split "
                    f"({', '.join(map(repr, trained[:3]))}); "
                    "a memorised line says nothing about new text: change the texts, or pass --allow-overlap"
                )
        styles = list(load_styles(args.checkpoint, alphabet).values()) if args.styles else []
        stride = int(meta.get("normalisation", {}).get("point_stride", 1))
        if args.url:
            name = args.model or args.checkpoint.name.removesuffix(".safetensors").removesuffix(".json")
            sample = service_sampler(args.url, name, args.bias, args.temperature, args.api_key)
        else:
            from .inference import load

            model, meta = load(args.checkpoint, device=args.device, text=True)
            sample = library_sampler(model, meta, args.bias, args.temperature)
        options = Options(args.bias, args.temperature, args.seed, args.num, args.styles, args.per_style, args.png_dir)
        source = f"service {args.url}" if args.url else "library"
        say(f"{args.checkpoint}: writing {args.num or len(texts)} text(s) ({source})")
        body = measure(sample, texts, styles, options, stride, progress=say)
    except (ValueError, OSError) as e:  # TextQualityError, StylesError, DataError, InferenceError, characters
        print(f"error: {e}", file=sys.stderr)
        return 2
    except subprocess.SubprocessError as e:
        print(f"error: tesseract failed ({e})", file=sys.stderr)
        return 1
    report = {
        "checkpoint": str(args.checkpoint),
        "source": args.url or "library",
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()},
        "texts": {
            "source": str(args.texts) if args.texts else "built-in HELD_OUT_TEXTS",
            "count": len(texts),
            "in_corpus": None if overlap is None else {split: len(v) for split, v in overlap.items()},
            "in_corpus_texts": overlap,
        },
        "point_stride": stride,
        **body,
    }
    text = json.dumps(report, indent=1, allow_nan=False, default=_jsonable)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    else:
        print(text)
    for line in summary_lines(report):
        say(line)
    return 0


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    raise TypeError(f"not JSON: {type(v).__name__}")


if __name__ == "__main__":
    sys.exit(main())
