"""`python -m model.train --condition text`: the text-conditioned handwriting model (model.conditional.TextVRNN)
trained on the demo corpus's line texts, whole lines; its checkpoint, resume, refusals and the texts each batch
carries."""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from model import load_checkpoint
from model import train as train_mod
from model.checkpoint import CheckpointError
from model.conditional import TextVRNN, load_text_checkpoint
from model.data import DataError
from model.data.texts import corpus_texts
from model.evaluate import load_corpus
from model.prepare import main as prepare_main
from model.text import DEFAULT_ALPHABET

# One thread: the per-step loop of TextVRNN is many small ops, which more threads only slow down on a busy machine.
TINY = ["--h-dim", "8", "--mlp-width", "8", "--z-dim", "2", "--n-components", "2", "--window-components", "2",
        "--threads", "1"]  # fmt: skip


@pytest.fixture(autouse=True)
def keep_threads():
    """--threads sets torch's thread count for the whole process: put it back for the tests after these."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def text_args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--data", str(data), "--preset", "handwriting-demo", "--condition", "text", "--family", "vrnn",
        "--output", "gmm", "--out", str(out), "--batch-size", "4", "--test-samples", "2", "--no-progress",
        *TINY, *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hw") / "demo"
    assert prepare_main(["handwriting-demo", "--out", str(out), "--size", "small", "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def trained(demo, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ckpt") / "text.safetensors"
    threads = torch.get_num_threads()
    try:
        assert train_mod.main(text_args(demo, out, "--max-steps", "3", "--eval-every", "3")) == 0
    finally:
        torch.set_num_threads(threads)
    return out


def test_text_training_writes_a_text_checkpoint_that_samples(trained):
    model, meta = load_text_checkpoint(trained)
    assert isinstance(model, TextVRNN) and model.config.name == "Text-VRNN-GMM"
    assert model.config.alphabet == DEFAULT_ALPHABET and model.config.window_components == 2
    assert meta["condition"]["kind"] == "text" and meta["condition"]["alphabet"] == DEFAULT_ALPHABET
    assert meta["condition"]["lines"]["train"]["kept"] == meta["dataset"]["split_sizes"]["train"] > 0
    assert meta["training"]["steps"] == 3 and meta["training"]["finished"]
    assert meta["training"]["max_len"] is None  # whole lines: the preset's crop is not used
    m = meta["metrics"]
    assert all(math.isfinite(m[k]) for k in ("valid_elbo", "test_elbo", "test_log_likelihood", "test_kl_per_frame"))
    assert m["test_log_likelihood"] >= m["test_elbo"] and m["num_samples"] == 2 and not m["exact"]
    with pytest.raises(CheckpointError, match="load_text_checkpoint"):
        load_checkpoint(trained)
    sample = model.sample(["hi"], max_steps=20, generator=torch.Generator().manual_seed(0))
    assert 1 <= len(sample.offsets[0]) <= 20 and sample.offsets[0].shape[1] == 3
    assert torch.isfinite(sample.offsets[0]).all()
    stem = trained.with_suffix("")
    rows = list(csv.DictReader((stem.parent / (stem.name + ".log.csv")).open()))
    assert [int(r["step"]) for r in rows] == [3] and math.isfinite(float(rows[0]["valid_elbo"]))
    assert (stem.parent / (stem.name + ".curves.png")).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_text_training_writes_one_style_per_test_writer(trained, demo):
    from model.data.handwriting import load_handwriting_corpus, manifest_writers
    from model.styles import load_styles, styles_path

    styles = load_styles(trained, DEFAULT_ALPHABET)
    writers = manifest_writers(demo)
    test_writers = sorted({writers[rel] for rel in load_handwriting_corpus(demo).names["test"]})
    assert styles_path(trained).is_file() and list(styles) == test_writers
    assert all(s.writer == s.name and 2 <= len(s.offsets) <= 1000 and s.text for s in styles.values())


def test_text_training_resumes(trained, demo, capsys):
    args = text_args(demo, trained, "--max-steps", "5", "--eval-every", "2", "--resume")
    assert train_mod.main(args) == 0
    assert "at step 3" in capsys.readouterr().err
    _, meta = load_text_checkpoint(trained)
    assert meta["training"]["steps"] == 5 and meta["condition"]["kind"] == "text"


def test_condition_text_refuses_speech_and_crops(tmp_path, capsys):
    out = str(tmp_path / "x.safetensors")
    for extra, message in [
        (["--modality", "speech", "--condition", "text"], "--condition text is for handwriting"),
        (["--preset", "speech-demo", "--condition", "text"], "--condition text is for handwriting"),
        (["--preset", "handwriting-demo", "--condition", "text", "--max-len", "100"], "whole lines"),
        (["--preset", "handwriting-demo", "--condition", "text", "--recipe", "cle"], "--init default only"),
        (["--preset", "handwriting-demo", "--window-components", "3"], "is for --condition text"),
        (["--preset", "handwriting-demo", "--condition", "text", "--window-components", "0"], "must be positive"),
    ]:
        with pytest.raises(SystemExit) as e:
            train_mod.parse_args(["--data", "d", "--out", out, *extra])
        assert e.value.code == 2 and message in capsys.readouterr().err, extra


def test_each_batch_carries_the_texts_of_its_lines(demo):
    conf = train_mod.parse_args(text_args(demo, demo / "x.safetensors", "--batch-size", "5"))
    corpus = load_corpus(conf.data, conf.modality)
    truth = corpus_texts(corpus)["train"]
    reduced, texts, _ = train_mod.with_texts(corpus, DEFAULT_ALPHABET)
    stream = train_mod.batches(reduced, conf, train_mod.Dist(), texts)
    seen = 0
    for _ in range(5):  # two epochs and a half: 12 lines in batches of 5, the last partial one dropped
        x, mask, lines = next(stream)
        assert len(lines) == len(x) == 5
        for b, text in enumerate(lines):
            row = x[b, : int(mask[b].sum())].numpy()
            j = next(j for j, s in enumerate(corpus.train) if s.shape == row.shape and np.array_equal(s, row))
            assert text == truth[j] and text
            seen += 1
        assert bool(mask[:, -1].any())  # whole lines: the longest fills the batch (no crops)
    assert seen == 25


def drop_text(path: Path) -> None:
    xml = path.read_text()
    start, end = xml.find("<Transcription>"), xml.find("</Transcription>") + len("</Transcription>")
    if start >= 0:
        path.write_text(xml[:start] + xml[end:])


def set_text(path: Path, text: str) -> None:
    xml = path.read_text()
    start = xml.index('<TextLine text="') + len('<TextLine text="')
    path.write_text(xml[:start] + text + xml[xml.index('"', start) :])


def test_lines_without_text_or_with_foreign_characters_are_dropped(demo, tmp_path, capsys):
    data = tmp_path / "demo"
    shutil.copytree(demo, data)
    names = load_corpus(data, "handwriting").names["train"]
    drop_text(data / names[0])
    set_text(data / names[1], "caf\u00e9 \u20ac5")
    reduced, texts, report = train_mod.with_texts(load_corpus(data, "handwriting"), DEFAULT_ALPHABET)
    assert report["train"]["kept"] == report["train"]["lines"] - 2 == len(reduced.train) == len(texts["train"])
    assert report["train"]["no_text"] == 1 and report["train"]["unsupported_characters"] == 1
    assert report["train"]["characters"] == "\u00e9\u20ac" and names[0] not in reduced.names["train"]
    line = train_mod.describe_dropped(report)
    assert "train: dropped 2 of 12 lines" in line and "'\u00e9'" in line and "valid: dropped 0 of 6" in line
    for path in (data / "lineStrokes").rglob("*.xml"):  # no line has a text: a clear error, exit 2
        drop_text(path)
    with pytest.raises(DataError, match="no train line has a text"):
        train_mod.with_texts(load_corpus(data, "handwriting"), DEFAULT_ALPHABET)
    assert train_mod.main(text_args(data, tmp_path / "y.safetensors", "--max-steps", "1")) == 2
    assert "no train line has a text" in capsys.readouterr().err


def test_point_stride_thins_the_lines_for_training_and_for_uploads(demo, tmp_path, capsys):
    from model.data.normalise import subsample_points
    from model.inference import normalised

    out = tmp_path / "s2.safetensors"
    assert train_mod.main(text_args(demo, out, "--max-steps", "1", "--eval-every", "1", "--point-stride", "2")) == 0
    err = capsys.readouterr().err
    pace = float(err.split("window: starts at ")[1].split()[0])
    full = load_corpus(demo, "handwriting")
    texts = corpus_texts(full)["train"]
    thinned = [subsample_points(full.stats.denormalise(x), 2) for x in full.train]
    assert pace == pytest.approx(sum(map(len, thinned)) / sum(map(len, texts)), abs=0.06)  # the data's own pace
    _, meta = load_text_checkpoint(out)
    assert meta["normalisation"]["point_stride"] == 2
    raw = full.stats.denormalise(full.test[0])
    x = normalised(meta, raw, "cpu")
    assert x.shape[1] == len(subsample_points(raw, 2)) < len(raw)  # an upload is thinned as the training lines


def test_point_stride_is_for_handwriting(tmp_path, capsys):
    for extra in (
        ["--preset", "speech-demo", "--point-stride", "2"],
        ["--preset", "handwriting-demo", "--point-stride", "0"],
    ):
        with pytest.raises(SystemExit) as e:
            train_mod.parse_args(["--data", "d", "--out", str(tmp_path / "x.safetensors"), *extra])
        assert e.value.code == 2 and "--point-stride" in capsys.readouterr().err


@pytest.mark.slow
def test_results_section_for_a_text_checkpoint(trained, tmp_path, monkeypatch):
    """model.results finds a text checkpoint apart from the paper's models and writes its section: the table, the
    text's worth (own text against another line's), legibility, the primed samples and the attention figure."""
    from model import textresults
    from model.results import find_checkpoints
    from model.textresults import text_section

    monkeypatch.setattr(textresults, "SWEEP_LINES", 1)
    monkeypatch.setattr(textresults, "SWEEP_BIASES", (0.0, 2.0))

    folder = tmp_path / "ckpts"
    folder.mkdir()
    stem = trained.with_suffix("")
    for suffix in (".safetensors", ".json", ".styles.json"):
        shutil.copyfile(stem.with_name(stem.name + suffix), folder / f"text{suffix}")
    found = find_checkpoints(folder)
    assert [p.name for p, _ in found["text"]] == ["text.safetensors"] and not found["handwriting"]
    md = "\n".join(text_section(found["text"], tmp_path / "figs", None, num=2, styles=2, per_style=1))
    assert "| `text` |" in md and "with their own text" in md and "legibility: 2 held-out line(s)" in md
    own, wrong = (float(md.split(k)[1].split()[0].rstrip(",")) for k in ("own text ", "next line's text "))
    assert math.isfinite(own) and math.isfinite(wrong)
    assert "Mean CER by sampling bias" in md and "0: " in md and "2: " in md
    for png in ("text-primed.png", "text-attention.png", "text-legibility.png"):
        assert (tmp_path / "figs" / png).read_bytes()[:4] == b"\x89PNG", png


def test_init_from_starts_from_a_checkpoints_weights_and_refuses_another_model(trained, demo, tmp_path, capsys):
    from safetensors.torch import load_file

    out = tmp_path / "warm.safetensors"
    args = text_args(demo, out, "--max-steps", "1", "--eval-every", "1", "--lr", "1e-12", "--init-from", str(trained))
    assert train_mod.main(args) == 0
    assert f"initialised from {trained}" in capsys.readouterr().err
    before, after = load_file(str(trained)), load_file(str(out))
    assert before.keys() == after.keys()
    assert all(torch.allclose(before[k], after[k], atol=1e-6) for k in before)  # one step at lr 1e-12: the same
    other = text_args(demo, tmp_path / "x.safetensors", "--max-steps", "1", "--init-from", str(trained))
    other[other.index("--h-dim") + 1] = "9"
    assert train_mod.main(other) == 2
    err = capsys.readouterr().err
    assert "another model" in err and "h_dim" in err
