"""docs/RESULTS.md's section on text-conditioned handwriting (issue "Write this text"), from the shipped text
checkpoints: what each scored on its test split, what the text is worth (the same lines scored with their own text
and with another line's), the conditional model against the unconditional VRNN-GMM on the same lines, legibility and
style (`model.textquality`), samples with and without priming, the attention window of one line, and the lines it
makes up from its word model: what the service's default handwriting request writes (`model.wordlm`).

`model.results` calls `text_section`; every number is recomputed with fixed seeds from the checkpoints and the
corpus they name.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import defaults, textquality
from .checkpoint import CheckpointError
from .conditional import TextVRNN
from .data import NormStats
from .data.handwriting import offsets_to_strokes
from .data.texts import corpus_texts
from .evaluate import evaluate_sequences, load_corpus
from .inference import DEFAULT_HANDWRITING_STEPS, generate_text, load
from .styles import Style, load_styles
from .wordlm import WordLM, load_wordlm

SCORED_LINES = 48  # test lines scored with their own text and with another's (one-sample ELBO, analytic KL)
PRIME_TEXT = "a quiet harbour at dawn"  # the primed-samples figure's text (one of textquality.HELD_OUT_TEXTS)
FIGURE_SEED = 3


def _text_model(path: Path) -> TextVRNN:
    model, _ = load(path, text=True)
    if not isinstance(model, TextVRNN):
        raise CheckpointError(f"{path}: not a text-conditioned checkpoint")
    return model


def _test_lines(meta: dict[str, Any], stats: NormStats, limit: int) -> tuple[list[np.ndarray], list[str]]:
    """The first `limit` test lines of the corpus the checkpoint names, as its model reads them (its normalisation,
    its point stride), with their texts."""
    corpus = load_corpus(meta["dataset"]["path"], "handwriting")  # every point: preprocess thins as the model did
    texts = corpus_texts(corpus)["test"]
    keep = [i for i, t in enumerate(texts) if t is not None and all(c in meta["config"]["alphabet"] for c in t)][:limit]
    seqs = [np.asarray(stats.preprocess(corpus.stats.denormalise(corpus.test[i])), np.float32) for i in keep]
    return seqs, [str(texts[i]) for i in keep]


def text_worth(model: TextVRNN, meta: dict[str, Any], unconditional: Path | None) -> dict[str, Any]:
    """ELBO per line (raw units) of the first SCORED_LINES test lines with their own text and with the next line's
    text, and, for a text model that reads every point, the unconditional model's ELBO of the same lines."""
    stats = NormStats.from_dict(meta["normalisation"])
    seqs, texts = _test_lines(meta, stats, SCORED_LINES)
    wrong = texts[1:] + texts[:1]

    def score(m: Any, lines: list[np.ndarray], st: NormStats, tx: list[str] | None) -> dict[str, Any]:
        return evaluate_sequences(m, lines, st, likelihood=False, seed=0, texts=tx)

    own, other = score(model, seqs, stats, texts), score(model, seqs, stats, wrong)
    out: dict[str, Any] = {
        "lines": len(seqs),
        "own": own["raw"]["elbo"],
        "wrong": other["raw"]["elbo"],
        "kl_per_frame": own["kl_per_frame"],
        "frames": sum(map(len, seqs)),
    }
    if unconditional is not None and stats.point_stride == 1:
        plain, plain_meta = load(unconditional)
        plain_stats = NormStats.from_dict(plain_meta["normalisation"])
        raw = [stats.denormalise(x) for x in seqs]
        lines = [np.asarray(plain_stats.preprocess(x), np.float32) for x in raw]
        out["unconditional"] = score(plain, lines, plain_stats, None)["raw"]["elbo"]
        out["unconditional_name"] = unconditional.stem
    return out


def primed_figure(model: TextVRNN, meta: dict[str, Any], named: list[Style], png: Path, styles: int = 3) -> list[str]:
    """One text written unprimed and in the first `styles` of the `named` styles (each beside the writer's own line)
    -> PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    named = named[:styles]
    rows: list[tuple[str, np.ndarray | None, np.ndarray]] = []
    unprimed, _ = generate_text(model, meta, [PRIME_TEXT], seed=FIGURE_SEED, bias=defaults.TEXT_BIAS)
    rows.append(("unprimed", None, unprimed[0]))
    for s in named:
        lines, _ = generate_text(
            model, meta, [PRIME_TEXT], seed=FIGURE_SEED, bias=defaults.TEXT_BIAS, prime=s.offsets, prime_text=s.text
        )
        rows.append((f"style {s.name}: \u201c{s.text}\u201d", s.offsets, lines[0]))
    fig, axes = plt.subplots(len(rows), 2, figsize=(12, 1.3 * len(rows)), squeeze=False)
    for (label, real, written), (a, b) in zip(rows, axes, strict=True):
        for ax, off, title in ((a, real, label), (b, written, f"writes \u201c{PRIME_TEXT}\u201d")):
            ax.set_axis_off()
            ax.set_aspect("equal")
            ax.set_title(title, fontsize=8, loc="left")
            if off is not None:
                for stroke in offsets_to_strokes(off):
                    ax.plot(stroke[:, 0], stroke[:, 1], color="black", linewidth=1)
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return [s.name for s in named]


def attention_figure(model: TextVRNN, meta: dict[str, Any], png: Path, text: str = PRIME_TEXT) -> bool:
    """The window's weight on each character at each pen step of one written line, under the line -> PNG; returns
    whether the stopping rule fired."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = NormStats.from_dict(meta["normalisation"])
    out = model.sample([text], bias=defaults.TEXT_BIAS, generator=torch.Generator().manual_seed(FIGURE_SEED))
    raw = stats.denormalise(out.offsets[0].detach().numpy())
    phi = out.phi[0].detach().numpy()
    fig, (a, b) = plt.subplots(2, 1, figsize=(10, 4.5), gridspec_kw={"height_ratios": [1, 2]})
    a.set_axis_off()
    a.set_aspect("equal")
    for stroke in offsets_to_strokes(raw):
        a.plot(stroke[:, 0], stroke[:, 1], color="black", linewidth=1)
    b.imshow(phi.T, aspect="auto", origin="lower", cmap="Greys", interpolation="nearest")
    b.set_yticks(range(len(text)), labels=[c if c != " " else "\u2423" for c in text], fontsize=7)
    b.set_xlabel("pen step")
    b.set_ylabel("character")
    fig.suptitle(
        f"attention window (phi) while writing \u201c{text}\u201d (bias {defaults.TEXT_BIAS:g}, seed {FIGURE_SEED})",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return bool(out.finished[0])


def quality(
    model: TextVRNN, meta: dict[str, Any], named: list[Style], png_dir: Path, num: int, styles: int, per_style: int
) -> dict[str, Any]:
    """model.textquality's report (library sampler, the default text bias, seed 0) with the `named` styles, its
    renders' contact sheet in png_dir."""
    options = textquality.Options(
        bias=defaults.TEXT_BIAS, seed=0, num=num, styles=styles, per_style=per_style, png_dir=png_dir
    )
    sampler = textquality.library_sampler(model, meta, bias=defaults.TEXT_BIAS)
    stride = int(meta["normalisation"].get("point_stride", 1))
    return textquality.measure(sampler, textquality.HELD_OUT_TEXTS, named, options, stride)


MADE_UP_LINES = 96  # the service's default request with seeds 0 .. 95 (four sets of 24 renders)
MADE_UP_SHEET = 12  # of them in the figure


def made_up_lines(
    model: TextVRNN, meta: dict[str, Any], lm: WordLM, png: Path, num: int = MADE_UP_LINES
) -> dict[str, Any]:
    """What the service writes for POST /generate/handwriting {"seed": s} (no text, model or steps: the text model
    writes the line its word model makes up from s, fitting the default steps, at the text bias), for s = 0 ..
    num - 1, measured as the issue measures legibility (mean Tesseract word confidence per render, each
    set of 24 and all) with the CER against the made-up text; the first MADE_UP_SHEET renders as a figure."""
    texts = [lm.line(s, DEFAULT_HANDWRITING_STEPS) for s in range(num)]
    if any(t is None for t in texts):
        raise ValueError(f"the word model fits no line in {DEFAULT_HANDWRITING_STEPS} steps")
    sampler = textquality.library_sampler(model, meta, bias=defaults.TEXT_BIAS)
    with tempfile.TemporaryDirectory() as renders:
        report = textquality.measure_legibility(sampler, [str(t) for t in texts], 0, None, Path(renders))
        shown = min(num, MADE_UP_SHEET)
        pngs = [(Path(renders) / f"line-{i:02d}.png").read_bytes() for i in range(shown)]
    textquality.contact_sheet(pngs, report["lines"][:shown], png)
    conf = [float(line["confidence"]) for line in report["lines"]]
    sets = [float(np.mean(conf[i : i + 24])) for i in range(0, len(conf), 24)]
    words = float(np.mean([len(str(t).split()) for t in texts]))
    return {**report["summary"], "sets": sets, "words": words, "lines_measured": report["lines"]}


SWEEP_BIASES = (0.0, 1.0, 1.5, 2.0, 2.5, 4.0)
SWEEP_LINES = 12


def bias_sweep(model: TextVRNN, meta: dict[str, Any]) -> dict[float, float]:
    """Mean CER of the first SWEEP_LINES held-out texts at each of SWEEP_BIASES (seed 0)."""
    out = {}
    for b in SWEEP_BIASES:
        sampler = textquality.library_sampler(model, meta, bias=b)
        report = textquality.measure_legibility(sampler, textquality.HELD_OUT_TEXTS[:SWEEP_LINES], 0, None, None, None)
        out[b] = float(report["summary"]["mean_cer"])
    return out


def text_section(
    found: list[tuple[Path, dict[str, Any]]],
    figs: Path,
    unconditional: Path | None,
    num: int = 24,
    styles: int = 8,
    per_style: int = 3,
) -> list[str]:
    """The Markdown of the section (figures written into `figs`)."""
    md = ["## Text-conditioned handwriting (issue 10)", ""]
    figs.mkdir(parents=True, exist_ok=True)
    if not found:
        return [*md, "No text checkpoint is shipped.", ""]
    md += [
        "| checkpoint | params | point stride | steps (best) | minutes | test lines | ELBO / line | "
        "IS / line (K) | KL / point |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for path, meta in found:
        t, x = meta["training"], meta["metrics"]
        md.append(
            f"| `{path.stem}` | {meta['params']:,} | {meta['normalisation'].get('point_stride', 1)} | "
            f"{t['steps']} ({t['best_step']}) | {t['minutes']:.0f} | {x['test_sequences']} | {x['test_elbo']:.1f} | "
            f"{x['test_log_likelihood']:.1f} ({x['num_samples']}) | {x['test_kl_per_frame']:.3g} |"
        )
    md.append("")
    md.append("Figures in normalised space, conditional on each line's text, as `model.train` wrote them.")
    md.append("")
    for path, meta in found:
        stem = path.stem
        model = _text_model(path)  # loaded once for every figure and measure of this checkpoint
        named = list(load_styles(path, model.config.alphabet).values())
        worth = text_worth(model, meta, unconditional)
        n = worth["lines"]
        md += [
            f"### `{stem}`",
            "",
            f"**What the text is worth** (the first {n} test lines, one-sample ELBO in raw units per line): with their "
            f"own text {worth['own']:.1f}, with the next line's text {worth['wrong']:.1f} "
            f"({worth['own'] - worth['wrong']:+.1f} nats per line for the right text).",
        ]
        if "unconditional" in worth:
            md.append(
                f"The unconditional `{worth['unconditional_name']}` on the same lines: {worth['unconditional']:.1f} "
                f"({worth['own'] - worth['unconditional']:+.1f} for the text model)."
            )
        else:
            md.append(
                "(This model reads thinned lines, so its likelihoods are of other objects than the unconditional "
                "models' and are not compared with theirs.)"
            )
        with tempfile.TemporaryDirectory() as renders:  # each line's PNG there; only the contact sheet is kept
            report = quality(model, meta, named, Path(renders), num, styles, per_style)
            sheet = figs / f"{stem}-legibility.png"
            shutil.copyfile(Path(renders) / "sheet.png", sheet)
        md += ["", "**Legibility and style** (`python -m model.textquality " + f"checkpoints/{path.name}" + "`):", ""]
        md += [f"- {line}" for line in textquality.summary_lines(report)]
        rel = f"figures/{sheet.name}"
        md += ["", f"![held-out texts, bias {defaults.TEXT_BIAS:g}]({rel})", ""]
        sweep = bias_sweep(model, meta)
        md += [
            "Mean CER by sampling bias (the first "
            f"{SWEEP_LINES} held-out texts; the service writes text at {defaults.TEXT_BIAS:g} unless told): "
            + ", ".join(f"{b:g}: {c:.2f}" for b, c in sweep.items())
            + ".",
            "",
        ]
        lm = load_wordlm(path, model.config.alphabet)
        if lm is not None:
            made_png = figs / f"{stem}-made-up.png"
            made = made_up_lines(model, meta, lm, made_png)
            sets = ", ".join(f"{v:.1f}" for v in made["sets"])
            md += [
                f"**Made-up lines: the service's default handwriting request** (`POST /generate/handwriting "
                f'{{"seed": S}}`: its word model, {lm.vocabulary} words of {lm.info.get("lines")} lines of '
                f"{lm.info.get('corpus')}, makes up a line of {made['words']:.1f} words on average, and the model "
                f"writes it at bias {defaults.TEXT_BIAS:g}; seeds 0 to {MADE_UP_LINES - 1}): mean Tesseract word "
                f"confidence **{made['mean_confidence']:.1f}** ({sets} for the four sets of 24), mean CER against "
                f"the made-up text {made['mean_cer']:.2f}, {made['finished_fraction']:.0%} finished. The same with "
                f"the command line: `python -m model.sample checkpoints/{path.name} --invent --out s.json --num 24 "
                "--seed S` (S = 0, 24, 48, 72), then `python -m model.quality handwriting s_*.json`.",
                "",
                f"![made-up lines](figures/{made_png.name})",
                "",
            ]
        primed_png = figs / f"{stem}-primed.png"
        names = primed_figure(model, meta, named, primed_png)
        md += [
            f"Samples of one text unprimed and primed with the styles {', '.join(names)} (left: the writer's line):",
            "",
            f"![primed samples](figures/{primed_png.name})",
            "",
        ]
        attention_png = figs / f"{stem}-attention.png"
        finished = attention_figure(model, meta, attention_png)
        md += [
            "The attention window while writing one line (the stopping rule "
            + ("fired" if finished else "did not fire: the step cap ended the line")
            + "):",
            "",
            f"![attention](figures/{attention_png.name})",
            "",
        ]
    return md
