"""`python -m model.prepare`: small demo corpora, reproducibility, arguments and missing tools."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from model import prepare
from model.data import load_handwriting_corpus, load_handwriting_file, load_speech_corpus
from model.demo import defaults, tts

HAVE_SYNTH = shutil.which("festival") is not None or shutil.which("espeak-ng") is not None
NO_SYNTH = "neither festival nor espeak-ng is installed (apt-get install festival festvox-us-slt-hts, or espeak-ng)"


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_handwriting_demo_small(tmp_path, capsys):
    out = tmp_path / "hw"
    assert prepare.main(["handwriting-demo", "--out", str(out), "--size", "small"]) == 0
    assert "24 lines" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["lines"] == 24 and len(manifest["writers"]) == 4
    corpus = load_handwriting_corpus(out)  # the manifest is not mistaken for a line
    assert sum(len(corpus.split(s)) for s in ("train", "valid", "test")) == 24 and not corpus.skipped
    assert all(np.isin(x[:, 2], (0, 1)).all() for x in corpus.train)

    # Reproducible from the seed, and the seed matters.
    again, other = tmp_path / "again", tmp_path / "other"
    assert prepare.main(["handwriting-demo", "--out", str(again), "--size", "small", "--quiet"]) == 0
    assert prepare.main(["handwriting-demo", "--out", str(other), "--size", "small", "--seed", "1", "--quiet"]) == 0
    assert _files(out) == _files(again)
    assert _files(out) != _files(other)


def test_alphabet_texts_cover_a_text_models_alphabet_and_leave_the_grammar_corpus_alone(tmp_path):
    """--texts alphabet: the grammar never writes j, z, X, digits, apostrophes, ...; these lines hold every character
    of model.text.DEFAULT_ALPHABET, and nothing outside it. The default corpus is untouched (the same files)."""
    import random
    from collections import Counter

    from model.demo.sentences import alphabet_line, text_line
    from model.text import DEFAULT_ALPHABET

    grammar = Counter("".join(text_line(random.Random("g")) for _ in range(600)))
    assert {"j", "z", "X", "Z", "0", "'", "&", "("} - set(grammar)  # what the grammar lacks (why the option exists)
    rng = random.Random("a")
    counts = Counter("".join(alphabet_line(rng) for _ in range(600)))
    assert set(counts) <= set(DEFAULT_ALPHABET)
    assert min(counts[c] for c in DEFAULT_ALPHABET) >= 3, sorted((counts[c], c) for c in DEFAULT_ALPHABET)[:5]

    plain, alpha = tmp_path / "plain", tmp_path / "alpha"
    args = ["--size", "small", "--quiet"]
    assert prepare.main(["handwriting-demo", "--out", str(plain), *args]) == 0
    assert prepare.main(["handwriting-demo", "--out", str(alpha), "--texts", "alphabet", *args]) == 0
    default = json.loads((plain / "manifest.json").read_text())
    manifest = json.loads((alpha / "manifest.json").read_text())
    assert "texts" not in default and manifest["texts"] == "alphabet" and manifest["lines"] == 24
    assert [f["text"] for f in manifest["files"]] != [f["text"] for f in default["files"]]
    again = tmp_path / "again"
    prepare.build_handwriting_demo(again, "small", seed=defaults.DEMO_SEED)  # the library's default: grammar
    assert _files(again) == _files(plain)


def test_extra_training_writers_keep_the_base_corpus_split(tmp_path, capsys):
    """--extra-train-seeds: the corpora of other seeds join as training material only; form lists keep exactly the
    validation and test lines of the base corpus (so models trained on either are scored on the same lines), the
    base corpus's files are byte for byte its own, and a rebuild without the option removes the lists."""
    plain, more = tmp_path / "plain", tmp_path / "more"
    assert prepare.main(["handwriting-demo", "--out", str(plain), "--size", "small", "--quiet"]) == 0
    argv = ["handwriting-demo", "--out", str(more), "--size", "small", "--extra-train-seeds", "1", "2"]
    assert prepare.main(argv) == 0
    assert "72 lines" in capsys.readouterr().out
    manifest = json.loads((more / "manifest.json").read_text())
    assert [e["seed"] for e in manifest["extra_train_seeds"]] == [1, 2] and len(manifest["writers"]) == 12
    assert {w["id"] for w in manifest["writers"]} >= {"w001", "v001", "u004"}
    base = _files(plain / "lineStrokes")
    assert {k: v for k, v in _files(more / "lineStrokes").items() if k.startswith("w")} == base
    a, b = load_handwriting_corpus(plain), load_handwriting_corpus(more)
    assert a.split_by == "writer" and b.split_by == "iam"
    assert b.names["valid"] == a.names["valid"] and b.names["test"] == a.names["test"]
    assert set(a.names["train"]) < set(b.names["train"]) and len(b.train) == len(a.train) + 48
    assert all(Path(n).parts[1].startswith(("v", "u")) for n in set(b.names["train"]) - set(a.names["train"]))

    assert prepare.main(["handwriting-demo", "--out", str(more), "--size", "small", "--force", "--quiet"]) == 0
    assert not list(more.glob("*.txt")) and _files(more) == _files(plain)
    with pytest.raises(SystemExit) as e:
        prepare.main(["handwriting-demo", "--out", str(tmp_path / "x"), "--extra-train-seeds", "0"])
    assert e.value.code == 2 and "differ from --seed 0" in capsys.readouterr().err


def test_writer_style_is_a_latent_factor(tmp_path):
    out = tmp_path / "hw"
    prepare.build_handwriting_demo(out, "small", seed=0)
    per_writer: dict[str, list[float]] = {}
    for rec in json.loads((out / "manifest.json").read_text())["files"]:
        x = load_handwriting_file(out / rec["file"])
        down = np.r_[0, x[:-1, 2]] == 0  # moves with the pen on the paper
        per_writer.setdefault(rec["writer"], []).append(float(np.median(np.hypot(x[down, 0], x[down, 1]))))
    between = np.var([np.mean(v) for v in per_writer.values()])
    within = np.mean([np.var(v) for v in per_writer.values()])
    assert between > 2 * within  # lines of one writer resemble each other more than other writers' lines


@pytest.mark.skipif(not HAVE_SYNTH, reason=NO_SYNTH)
def test_speech_demo_small(tmp_path):
    out = tmp_path / "sp"
    assert prepare.main(["speech-demo", "--out", str(out), "--size", "small", "--quiet"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["utterances"] == defaults.SPEECH_DEMO_UTTERANCES["small"]
    wavs = sorted((out / "wav").glob("*.wav"))
    assert len(wavs) == manifest["utterances"]
    for w in wavs:
        info = sf.info(w)
        assert info.samplerate == 16_000 and info.channels == 1 and info.duration > 0.5
    corpus = load_speech_corpus(out)
    assert len(corpus.train) > 10 and corpus.stats.std > 0
    texts = [f["text"] for f in manifest["files"]]
    assert len(set(texts)) == len(texts)  # varied sentences
    again = tmp_path / "again"
    prepare.build_speech_demo(again, "small", seed=0, synthesiser=manifest["synthesiser"], utterances=2)
    assert (again / "wav" / "utt00001.wav").read_bytes() == (out / "wav" / "utt00001.wav").read_bytes()


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (apt-get install espeak-ng)")
def test_speech_demo_with_espeak(tmp_path):
    m = prepare.build_speech_demo(tmp_path / "e", "small", synthesiser="espeak-ng", utterances=2)
    assert m["synthesiser"] == "espeak-ng" and sf.info(tmp_path / "e" / "wav" / "utt00002.wav").samplerate == 16_000


def test_help_runs_as_a_module():
    proc = subprocess.run(
        [sys.executable, "-m", "model.prepare", "--help"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0
    for word in ("speech-demo", "handwriting-demo", "small", "full", "--seed", "examples"):
        assert word in proc.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "required"),
        (["poetry-demo", "--out", "x"], "invalid choice"),
        (["speech-demo"], "--out"),
        (["handwriting-demo", "--out", "{tmp}/o", "--size", "huge"], "invalid choice: 'huge'"),
        (["handwriting-demo", "--out", "{tmp}/o", "--seed", "-1"], "must be 0 or more"),
        (["handwriting-demo", "--out", "{tmp}/o", "--seed", "abc"], "whole number"),
        (["speech-demo", "--out", "{tmp}/o", "--jobs", "0"], "must be 1 or more"),
        (["handwriting-demo", "--out", "{tmp}/file.txt"], "is a file"),
        (["handwriting-demo", "--out", "{tmp}/full"], "not empty"),
    ],
)
def test_bad_arguments_exit_2(tmp_path, capsys, args, message):
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    with pytest.raises(SystemExit) as e:
        prepare.main([a.format(tmp=tmp_path) for a in args])
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_force_replaces_only_the_corpus(tmp_path):
    out = tmp_path / "hw"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert prepare.main(["handwriting-demo", "--out", str(out), "--size", "small", "--force", "--quiet"]) == 0
    assert prepare.main(["handwriting-demo", "--out", str(out), "--size", "small", "--force", "--quiet"]) == 0
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == ["lineStrokes", "manifest.json", "notes.txt"]


def test_missing_synthesiser_says_what_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(tts.shutil, "which", lambda name: None)
    assert prepare.main(["speech-demo", "--out", str(tmp_path / "s"), "--size", "small"]) == 1
    err = capsys.readouterr().err
    assert "apt-get install festival festvox-us-slt-hts" in err and "espeak-ng" in err
    assert not (tmp_path / "s" / "wav").exists()


def test_missing_fonts_say_what_to_install(tmp_path, capsys, monkeypatch):
    from model.demo import hershey

    monkeypatch.setattr(hershey, "FONT_DIRS", ())
    monkeypatch.delenv(hershey.FONT_DIR_ENV, raising=False)
    monkeypatch.setitem(sys.modules, "HersheyFonts", None)  # as if the PyPI package were absent
    assert prepare.main(["handwriting-demo", "--out", str(tmp_path / "h"), "--size", "small"]) == 1
    assert "hershey-fonts-data" in capsys.readouterr().err
