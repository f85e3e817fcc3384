"""Regenerate docs/RESULTS.md from the shipped checkpoints: the Table 1 analogue, Figures 2-4, samples.

    python -m model.results [--checkpoints checkpoints] [--out docs] [--seed 0]

Numbers come from each checkpoint's JSON (written by `model.train` after training: test ELBO and
IS-40 log-likelihood); the figures and audio samples are drawn afresh with a fixed seed, on the test
split of the corpora the checkpoints name. Hand-written findings live in docs/results-notes.md and
are included as they are.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any, cast

import numpy as np

from . import defaults, render
from .checkpoint import CheckpointError, read_metadata
from .data import DataError, NormStats
from .evaluate import load_corpus
from .sample import analyze_file, generate, latent_png, load, render_sample
from .textresults import text_section

ORDER = ["RNN-Gauss", "RNN-GMM", "VRNN-I-Gauss", "VRNN-I-GMM", "VRNN-Gauss", "VRNN-GMM"]
MODALITIES = ("speech", "handwriting")


def find_checkpoints(folder: Path) -> dict[str, list[tuple[Path, dict[str, Any]]]]:
    """Finished checkpoints by modality, in the paper's row order; text-conditioned handwriting models under
    "text" (by file name)."""
    found: dict[str, list[tuple[Path, dict[str, Any]]]] = {m: [] for m in (*MODALITIES, "text")}
    for path in sorted(folder.glob("*.safetensors")):
        if path.name.endswith(".resume.safetensors"):
            continue
        try:
            meta = read_metadata(path)
        except CheckpointError as e:
            print(f"warning: skipping {e}", file=sys.stderr)
            continue
        if "metrics" in meta and "test_log_likelihood" in meta["metrics"]:
            found["text" if meta["config"].get("alphabet") else meta["config"]["modality"]].append((path, meta))
    for m in MODALITIES:
        found[m].sort(key=lambda pm: ORDER.index(pm[1]["name"]))
    return found


def _cell(m: dict[str, Any]) -> str:
    if m["exact"]:
        return f"{m['test_log_likelihood']:.0f}"
    return f"≥ {m['test_elbo']:.0f}<br>≈ {m['test_log_likelihood']:.0f}"


def table_1(found: dict[str, list[tuple[Path, dict[str, Any]]]]) -> list[str]:
    by_name = {m: {meta["name"]: meta["metrics"] for _, meta in items} for m, items in found.items()}
    names = [n for n in ORDER if any(n in by_name[m] for m in MODALITIES)]
    datasets = {m: found[m][0][1]["dataset"]["dataset"] if found[m] else m for m in MODALITIES}
    lines = [
        f"| model | {datasets['speech']} (speech) | {datasets['handwriting']} (handwriting) |",
        "| --- | --- | --- |",
    ]
    for n in names:
        cells = [_cell(by_name[m][n]) if n in by_name[m] else "-" for m in MODALITIES]
        lines.append(f"| {n} | {cells[0]} | {cells[1]} |")
    return lines


def details(found: dict[str, list[tuple[Path, dict[str, Any]]]]) -> list[str]:
    lines = [
        "| checkpoint | params | mlp_width | steps (best) | minutes | stopped | test seqs | "
        "ELBO/frame | log-lik/frame | KL/frame | raw log-lik/seq | raw log-lik/frame | recipe |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for m in MODALITIES:
        for path, meta in found[m]:
            t, x = meta["training"], meta["metrics"]
            lines.append(
                f"| `{path.stem}` | {meta['params']:,} | {meta['config']['mlp_width']} | "
                f"{t['steps']} ({t['best_step']}) | {t['minutes']:.1f} | {x.get('stopped', '')} | "
                f"{x['test_sequences']} | {x['test_elbo_per_frame']:.3f} | {x['test_log_likelihood_per_frame']:.3f} | "
                f"{_kl(x)} | {x['raw']['log_likelihood']:.1f} | {x['raw']['log_likelihood_per_frame']:.3f} | "
                f"{_recipe(t, meta.get('dataset', {}))} |"
            )
    return lines


def _kl(metrics: dict[str, Any]) -> str:
    """The test KL per frame (nats; '-' for an RNN or a checkpoint trained before it was recorded)."""
    kl = metrics.get("test_kl_per_frame")
    return "-" if kl is None or metrics.get("exact") else f"{kl:.3g}"


def _recipe(training: dict[str, Any], dataset: dict[str, Any] | None = None) -> str:
    """The training options that departed from the plain defaults, as command-line flags (and the corpus, where it
    is not the preset's own)."""
    parts = [f"--recipe {training['recipe']}"] if training.get("recipe", "default") != "default" else []
    corpus = Path(str((dataset or {}).get("path") or "")).name
    if corpus and training.get("preset") and corpus != training["preset"]:
        parts.insert(0, f"--data {corpus}")
    if training.get("free_bits"):
        parts.append(
            f"--free-bits {training['free_bits']:g}" + (" (dim)" if training.get("free_bits_mode") == "dim" else "")
        )
    if training.get("kl_warmup"):
        parts.append(f"--kl-warmup {training['kl_warmup']}")
    if training.get("stateful"):
        parts.append("--stateful")
    from .train import OPTION_DEFAULTS, PRESETS

    preset = PRESETS.get(training.get("preset") or "", {})
    if training.get("max_len") != preset.get("max_len"):
        parts.append(f"--max-len {training['max_len']}")
    if training.get("lr") is not None and training["lr"] != preset.get("lr", OPTION_DEFAULTS["lr"]):
        parts.append(f"--lr {training['lr']:g}")
    if training.get("init_from"):  # steps and minutes are then this run's, after the checkpoint it started from
        parts.append(f"--init-from {Path(training['init_from']).name}")
    return " ".join(parts) or "-"


def _pick(found, modality: str, *names: str) -> tuple[Path, dict[str, Any]] | None:
    for n in names:
        for path, meta in found[modality]:
            if meta["name"] == n:
                return path, meta
    return None


def figures(found, out: Path, seed: int) -> list[str]:
    """Draw Figures 2-4 and the audio samples into out/figures and out/samples -> Markdown lines."""
    figs, samples = out / "figures", out / "samples"
    figs.mkdir(parents=True, exist_ok=True)
    samples.mkdir(parents=True, exist_ok=True)
    md: list[str] = []
    corpora = {}
    for m in MODALITIES:
        if found[m]:
            meta = found[m][0][1]
            corpora[m] = load_corpus(meta["dataset"]["path"], m, meta["dataset"].get("chunk_seconds"))

    # Figure 2: the latent analysis of a test example.
    for m, names in (("speech", ("VRNN-Gauss", "VRNN-GMM", "VRNN-I-Gauss")), ("handwriting", ("VRNN-GMM",))):
        picked = _pick(found, m, *names)
        if picked is None or m not in corpora:
            continue
        path, _ = picked
        model, meta = load(path)
        corpus = corpora[m]
        test = [corpus.stats.denormalise(x) for x in corpus.test]
        example = max(test[:20], key=lambda r: float(np.abs(r[:, :2]).sum()))  # a lively one, not silence
        source = render.wav_bytes(example.reshape(-1), meta["sample_rate"]) if m == "speech" else _strokes_json(example)
        analysis, x_raw = analyze_file(model, meta, source, name="test example")
        png = latent_png(model, meta, analysis, x_raw, label="a test example")
        (figs / f"fig2-latent-{m}.png").write_bytes(png)
        md += [f"![Figure 2, {m}](figures/fig2-latent-{m}.png)", ""]

    # Figure 3: waveforms of training examples and of samples (2 s each), drawn as the authors' script
    # drew them (the draw fed back, the drawn component's mean written), and WAV files of the samples.
    if "speech" in corpora:
        corpus = corpora["speech"]
        waves = {"training examples": [corpus.stats.denormalise(x).reshape(-1) for x in corpus.train[:3]]}
        for path, _ in found["speech"]:
            model, meta = load(path)
            raws = generate(model, meta, num=3, seconds=2.0, seed=seed, mean="component-mean")
            if meta["name"] in ("RNN-GMM", "VRNN-Gauss", "VRNN-GMM"):
                waves[meta["name"]] = [r.reshape(-1) for r in raws]
            (samples / f"{path.stem}.component-mean.wav").write_bytes(cast(bytes, render_sample(meta, raws[0])))
            draw = generate(model, meta, num=1, seconds=2.0, seed=seed)[0]
            (samples / f"{path.stem}.wav").write_bytes(cast(bytes, render_sample(meta, draw)))  # speech: WAV
            mean = generate(model, meta, num=1, seconds=2.0, seed=seed, mean=True)[0]
            (samples / f"{path.stem}.mean.wav").write_bytes(cast(bytes, render_sample(meta, mean)))
        (figs / "fig3-waveforms.png").write_bytes(render.waveforms_figure(waves, found["speech"][0][1]["sample_rate"]))
        md += ["![Figure 3](figures/fig3-waveforms.png)", ""]

    # Figure 4: handwriting, training examples and unconditional samples.
    if "handwriting" in corpora:
        corpus = corpora["handwriting"]
        lines = {"training examples": [corpus.stats.denormalise(x) for x in corpus.train[:3]]}
        for path, _ in found["handwriting"]:
            model, meta = load(path)
            raws = generate(model, meta, num=3, steps=700, seed=seed, bias=defaults.HANDWRITING_BIAS)
            lines[meta["name"]] = raws
            (samples / f"{path.stem}.svg").write_text(cast(str, render_sample(meta, raws[0])))  # handwriting: SVG
        (figs / "fig4-handwriting.png").write_bytes(render.handwriting_figure(lines))
        md += [
            "![Figure 4](figures/fig4-handwriting.png)",
            "",
            f"Figure 4's samples: 700 steps each at the service's default Graves bias ({defaults.HANDWRITING_BIAS:g}; "
            f"`model.defaults.HANDWRITING_BIAS`), seed {seed}.",
            "",
        ]
    return md


def _strokes_json(offsets: np.ndarray) -> bytes:
    """Raw (T, 3) offsets as the JSON offsets format the handwriting reader takes."""
    import json

    return json.dumps(np.asarray(offsets, dtype=float).round(4).tolist()).encode()


def copy_curves(found, src: Path, out: Path) -> list[str]:
    md = []
    (out / "figures").mkdir(parents=True, exist_ok=True)
    for m in MODALITIES:
        for path, _ in found[m]:
            curve = src / f"{path.stem}.curves.png"
            if curve.exists():
                shutil.copyfile(curve, out / "figures" / curve.name)
                md.append(f"- [{path.stem}](figures/{curve.name})")
    return md


def write_results(checkpoints: Path, out: Path, seed: int, curves_from: Path | None) -> Path:
    found = find_checkpoints(checkpoints)
    if not any(found.values()):
        raise CheckpointError(f"{checkpoints}: no finished checkpoints (with test metrics) found")
    md = [
        "# Results on the demo corpora",
        "",
        "Regenerated by `python -m model.results` from the checkpoints in "
        f"`{checkpoints}/`; trained by `scripts/train_checkpoints.sh` (the exact commands are below).",
        "",
        "## Table 1 analogue",
        "",
        "Average log-likelihood per test sequence in nats, in the normalised space the models were trained "
        "in (as the paper reports): exact for the RNNs; for the VRNNs ≥ the ELBO and ≈ the importance-sampled "
        "estimate with K = 40, both from the same 40 draws per sequence. Higher is better. Speech sequences are "
        "0.5 s chunks (40 frames of 200 samples); handwriting sequences are whole lines.",
        "",
        *table_1(found),
        "",
        "Details (per-frame figures and the raw-data space, which adds the normalisation's log-Jacobian):",
        "",
        *details(found),
        "",
    ]
    notes = out / "results-notes.md"
    if notes.exists():
        md += ["## Findings", "", notes.read_text().strip(), ""]
    md += ["## Figures", "", *figures(found, out, seed)]
    if found["text"]:
        unconditional = _pick(found, "handwriting", "VRNN-GMM")
        md += text_section(found["text"], out / "figures", unconditional[0] if unconditional else None)
    curves = copy_curves(found, curves_from or checkpoints, out)
    if curves:
        md += ["Training curves:", "", *curves, ""]
    stats = {m: NormStats.from_dict(found[m][0][1]["normalisation"]) for m in MODALITIES if found[m]}
    md += [
        "Audio samples (2 s, seed fixed) are in [samples/](samples/): `NAME.wav` is a sample, "
        "`NAME.component-mean.wav` the same trajectory with the drawn component's mean written instead of the "
        "draw (what the authors' sampling script saved, and what Figure 3 shows), `NAME.mean.wav` the decoder "
        "mean fed back; handwriting samples are `NAME.svg`.",
        "",
        "## Commands",
        "",
        "```bash",
        "make setup",
        "scripts/train_checkpoints.sh runs/ckpt 2   # builds data/*-demo, trains every model (2 at a time)",
        "for f in runs/ckpt/*.train.log; do n=${f%.train.log}; cp $n.safetensors $n.json checkpoints/; done",
        f"python -m model.results --checkpoints checkpoints --curves-from runs/ckpt --out {out} --seed {seed}",
        "python -m model.evaluate checkpoints/speech-*.safetensors --data data/speech-demo   # re-score",
        "```",
        "",
        "Normalisation used: " + "; ".join(f"{m}: mean {s.mean:.4g}, std {s.std:.4g}" for m, s in stats.items()) + ".",
        "",
    ]
    path = out / "RESULTS.md"
    path.write_text("\n".join(md))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.results", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoints", default="checkpoints", help="folder of NAME.safetensors + NAME.json")
    parser.add_argument("--curves-from", help="folder holding NAME.curves.png (default: --checkpoints)")
    parser.add_argument("--out", default="docs", help="where RESULTS.md, figures/ and samples/ go")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        path = write_results(Path(args.checkpoints), Path(args.out), args.seed,
                             Path(args.curves_from) if args.curves_from else None)  # fmt: skip
    except (CheckpointError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
