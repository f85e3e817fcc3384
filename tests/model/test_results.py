"""docs/RESULTS.md regenerates from trained checkpoints: the table, the figures, the samples."""

from __future__ import annotations

import shutil

import pytest
import soundfile as sf
from modelkit import write_tones

from model import load_checkpoint
from model import train as train_mod
from model.prepare import main as prepare_main
from model.results import main as results_main

PNG = b"\x89PNG\r\n\x1a\n"


def _train(data, preset, family, output, out):
    args = train_mod.parse_args([
        "--data", str(data), "--preset", preset, "--family", family, "--output", output, "--out", str(out),
        "--max-steps", "2", "--eval-every", "2", "--batch-size", "4", "--h-dim", "8", "--mlp-width", "8",
        "--z-dim", "4", "--n-components", "2", "--test-samples", "3", "--no-progress", "--max-len", "40",
    ])  # fmt: skip
    assert train_mod.train(args) == 0


def test_results_document_from_checkpoints(tmp_path, capsys):
    speech = write_tones(tmp_path / "speech", n=8)
    hand = tmp_path / "hand"
    assert prepare_main(["handwriting-demo", "--out", str(hand), "--size", "small"]) == 0
    ckpts = tmp_path / "ckpts"
    _train(speech, "speech-demo", "rnn", "gmm", ckpts / "speech-rnn-gmm.safetensors")
    _train(speech, "speech-demo", "vrnn", "gauss", ckpts / "speech-vrnn-gauss.safetensors")
    _train(hand, "handwriting-demo", "vrnn", "gmm", ckpts / "handwriting-vrnn-gmm.safetensors")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "results-notes.md").write_text("Hand-written finding.")
    assert results_main(["--checkpoints", str(ckpts), "--out", str(docs), "--seed", "3"]) == 0

    text = (docs / "RESULTS.md").read_text()
    _, meta = load_checkpoint(ckpts / "speech-vrnn-gauss.safetensors")
    m = meta["metrics"]
    assert f"| VRNN-Gauss | ≥ {m['test_elbo']:.0f}<br>≈ {m['test_log_likelihood']:.0f} |" in text
    assert "| RNN-GMM | " in text and "Hand-written finding." in text
    for fig in ("fig2-latent-speech", "fig2-latent-handwriting", "fig3-waveforms", "fig4-handwriting"):
        assert (docs / "figures" / f"{fig}.png").read_bytes()[:8] == PNG, fig
        assert f"figures/{fig}.png" in text
    assert (docs / "figures" / "speech-vrnn-gauss.curves.png").exists()
    wave, rate = sf.read(docs / "samples" / "speech-vrnn-gauss.wav")
    assert rate == 16000 and len(wave) == 32000
    # Figure 3's mode: the draw fed back, the drawn component's mean written (the authors' script).
    mean, _ = sf.read(docs / "samples" / "speech-vrnn-gauss.component-mean.wav")
    assert len(mean) == 32000 and not (mean == wave).all()
    row = next(line for line in text.splitlines() if line.startswith("| `handwriting-vrnn-gmm` |"))
    kl = load_checkpoint(ckpts / "handwriting-vrnn-gmm.safetensors")[1]["metrics"]["test_kl_per_frame"]
    assert f"| {kl:.3g} |" in row and kl >= 0  # the KL per frame column
    assert "KL/frame" in text and "| recipe |" in text
    assert "<svg" in (docs / "samples" / "handwriting-vrnn-gmm.svg").read_text()

    # The same seed regenerates the same samples.
    before = (docs / "samples" / "speech-rnn-gmm.wav").read_bytes()
    assert results_main(["--checkpoints", str(ckpts), "--out", str(docs), "--seed", "3"]) == 0
    assert (docs / "samples" / "speech-rnn-gmm.wav").read_bytes() == before


def test_results_without_checkpoints_is_an_error(tmp_path, capsys):
    assert results_main(["--checkpoints", str(tmp_path), "--out", str(tmp_path / "docs")]) == 2
    assert "no finished checkpoints" in capsys.readouterr().err


@pytest.mark.skipif(not shutil.which("tesseract"), reason="needs tesseract (tesseract-ocr)")
def test_made_up_lines_are_the_services_default_requests_measured(tmp_path):
    """textresults.made_up_lines writes what POST /generate/handwriting {"seed": s} writes for s = 0 .. num - 1 (the
    word model's line for s, written with seed s at the text bias) and measures it."""
    from tinyckpt import write_tiny_text_checkpoint

    from model import defaults, inference
    from model.conditional import load_text_checkpoint
    from model.textresults import made_up_lines
    from model.wordlm import count_lines

    ckpt = write_tiny_text_checkpoint(tmp_path / "t.safetensors")
    model, meta = load_text_checkpoint(ckpt)
    lm = count_lines(["hello world", "a red door", "old bread"])
    made = made_up_lines(model, meta, lm, tmp_path / "sheet.png", num=3)
    assert (tmp_path / "sheet.png").is_file() and made["lines"] == 3 and len(made["sets"]) == 1
    for s, line in enumerate(made["lines_measured"]):
        assert line["text"] == lm.line(s, 700) and line["seed"] == s
        raws, _ = inference.generate_text(model, meta, [line["text"]], seed=s, bias=defaults.TEXT_BIAS)
        assert line["points"] == len(raws[0])
    assert made["sets"][0] == pytest.approx(made["mean_confidence"], abs=0.01)
