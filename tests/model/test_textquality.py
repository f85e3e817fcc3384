"""model.textquality: the held-out texts, the CER and style measures (Tesseract and the model replaced where the
answer must be known), the overlap refusal, and the command line on a tiny untrained text checkpoint (one run reads
with the real Tesseract). The service path (--url) is checked for its arguments only: no stub server here."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from tinyckpt import TEXT_ALPHABET, tiny_config, write_tiny_checkpoint, write_tiny_text_checkpoint

from model import textquality as tq
from model.data.handwriting import load_handwriting_corpus
from model.data.texts import corpus_texts
from model.demo.sentences import alphabet_line, text_line
from model.quality import Reading, line_style, tesseract_available
from model.styles import Style, write_styles
from model.text import DEFAULT_ALPHABET


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_tiny_text_checkpoint(tmp_path_factory.mktemp("tq") / "text.safetensors", alphabet=DEFAULT_ALPHABET)


@pytest.fixture
def fake_ocr(monkeypatch):
    """Tesseract 'installed' and reading every line as 'the'."""
    monkeypatch.setattr(tq, "tesseract_available", lambda: True)
    monkeypatch.setattr(tq, "read_png", lambda png: Reading("the", 40.0, 1, 3))


def zigzag(slant_deg: float, height: float, strokes: int = 40, per: int = 6) -> np.ndarray:
    """A synthetic line of up-down strokes: the up strokes lean `slant_deg` from vertical and are `height` tall
    (line_style measures exactly that), a pen lift every 8 strokes."""
    t = np.tan(np.radians(slant_deg))
    rows = []
    for i in range(strokes):
        up = i % 2 == 0
        dy = height / per * (1 if up else -1)
        dx = t * height / per if up else (1.5 - t) * height / per
        rows += [[dx, dy, float(k == per - 1 and i % 8 == 7)] for k in range(per)]
    rows[-1][2] = 1.0
    return np.array(rows, dtype=np.float32)


WRITERS = {"wa": zigzag(25, 10), "wb": zigzag(0, 14), "wc": zigzag(-15, 6)}


def styles(names=("wa", "wb", "wc")) -> list[Style]:
    return [Style(n, n, "a cold tea", WRITERS[n]) for n in names]


# The held-out texts ----------------------------------------------------------------------------------------------


def test_held_out_texts_are_short_distinct_lines_of_the_default_alphabet():
    texts = tq.HELD_OUT_TEXTS
    assert len(texts) == 24 and len(set(texts)) == 24
    assert all(16 <= len(t) <= 32 for t in texts)
    assert all(set(t) <= set(DEFAULT_ALPHABET) for t in texts)
    assert any(c.isupper() for t in texts for c in t) and any(not c.isalnum() and c != " " for t in texts for c in t)
    tq.check_alphabet(texts, DEFAULT_ALPHABET)  # no error


def test_no_held_out_text_is_a_line_of_the_demo_grammar(corpus):
    manifest = json.loads((corpus / "manifest.json").read_text())
    lines = {f["text"] for f in manifest["files"]}
    assert len(lines) >= 20 and not lines & set(tq.HELD_OUT_TEXTS)
    assert tq.corpus_overlap(tq.HELD_OUT_TEXTS, corpus) == {"train": [], "valid": [], "test": []}
    r = random.Random(7)  # and many more lines of the grammar than a corpus holds
    many = {text_line(r) for _ in range(20000)} | {alphabet_line(r) for _ in range(20000)}
    assert not many & set(tq.HELD_OUT_TEXTS)


def test_a_text_of_the_training_split_is_refused_unless_allowed(corpus, ckpt, tmp_path, fake_ocr, capsys):
    trained = next(t for t in corpus_texts(load_handwriting_corpus(corpus))["train"] if t)
    texts = tmp_path / "texts.txt"
    texts.write_text(f"my cat sleeps on the sofa\n\n{trained}\n")
    argv = [str(ckpt), "--texts", str(texts), "--data", str(corpus), "--styles", "0", "--num", "1"]
    assert tq.main(argv) == 2
    err = capsys.readouterr().err
    assert "1 of the texts are lines of" in err and repr(trained) in err and "--allow-overlap" in err
    assert tq.main([*argv, "--allow-overlap"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["texts"]["in_corpus"]["train"] == 1 and report["texts"]["in_corpus_texts"]["train"] == [trained]
    assert report["texts"]["count"] == 2 and report["legibility"]["summary"]["lines"] == 1


# Legibility -------------------------------------------------------------------------------------------------------


def test_legibility_scores_each_reading_against_its_text(tmp_path):
    readings = iter(["hello world", "HELLO  word", ""])
    seeds = []

    def sample(texts, seed, style):
        assert style is None and len(texts) == 1
        seeds.append(seed)
        return [WRITERS["wa"]], [seed != 12]

    result = tq.measure_legibility(
        sample, ["hello world"] * 3, seed=10, read=lambda png: Reading(next(readings), 50.0, 2, 10), png_dir=tmp_path
    )
    assert seeds == [10, 11, 12]
    lines = result["lines"]
    assert [line["cer"] for line in lines] == [0.0, round(1 / 11, 4), 1.0]  # case and spacing folded; nothing read
    assert [line["finished"] for line in lines] == [True, True, False]
    assert lines[0]["points"] == len(WRITERS["wa"]) and lines[1]["reading"] == "HELLO  word"
    summary = result["summary"]
    assert summary["mean_cer"] == pytest.approx((1 / 11 + 1) / 3, abs=1e-4)
    assert summary["median_cer"] == pytest.approx(1 / 11, abs=1e-4)
    assert summary["finished_fraction"] == pytest.approx(2 / 3, abs=1e-4) and summary["meets_target"] is False
    assert sorted(p.name for p in tmp_path.iterdir()) == ["line-00.png", "line-01.png", "line-02.png", "sheet.png"]
    assert (tmp_path / "sheet.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_target_is_on_the_mean_cer():
    lines = [{"cer": c, "confidence": 0.0, "finished": True} for c in (0.1, 0.2, 0.6)]
    assert tq.legibility_summary(lines)["meets_target"] is True  # mean exactly 0.30
    assert tq.legibility_summary(lines, target=0.29)["meets_target"] is False
    assert tq.legibility_summary([]) == {"lines": 0}


# Style ------------------------------------------------------------------------------------------------------------


def test_line_style_measures_the_synthetic_writers():
    assert line_style(WRITERS["wa"]) == pytest.approx((25.0, 10.0), abs=1e-3)
    assert line_style(WRITERS["wc"]) == pytest.approx((-15.0, 6.0), abs=1e-3)
    assert line_style(WRITERS["wa"][:20]) is None  # too short for a window


def test_a_writers_own_line_is_closer_to_that_writer():
    refs = {n: line_style(o) for n, o in WRITERS.items()}
    samples = [(n, refs[n]) for n in refs] + [("wa", refs["wb"]), ("wb", None)]
    scored = tq.style_scores(samples, refs)
    own = scored["scores"][:3]
    assert all(s["closer"] and s["own_distance"] == 0 and s["ratio"] == 0 for s in own)
    assert scored["scores"][3]["closer"] is False and scored["scores"][3]["ratio"] > 1
    assert scored["scores"][4] is None and scored["measured"] == 4
    assert scored["closer_fraction"] == 0.75
    with pytest.raises(ValueError, match="two writers"):
        tq.style_scores(samples, {"wa": refs["wa"]})


def test_style_compares_primed_with_unprimed_samples():
    calls = []

    def sample(texts, seed, style):  # primed: the writer's own line; unprimed: writer wb's
        calls.append((tuple(texts), seed, None if style is None else style.name))
        line = WRITERS["wb"] if style is None else style.offsets
        return [line] * len(texts), [True] * len(texts)

    result = tq.measure_style(sample, styles(), ["one", "two", "three", "four", "five"], per_style=2, seed=5)
    assert calls[:2] == [(("one", "two"), 1005, "wa"), (("one", "two"), 1005, None)]
    assert calls[4] == (("five", "one"), 1007, "wc")  # texts taken in turn, wrapping round
    assert set(result["writers"]) == {"wa", "wb", "wc"} and result["writers"]["wa"]["slant"] == pytest.approx(25)
    assert result["primed"] == {"measured": 6, "closer_fraction": 1.0, "mean_ratio": 0.0, "samples": 6}
    # unprimed lines all look like wb: closer to "their" writer only where that writer is wb (2 of 6)
    assert result["unprimed"]["closer_fraction"] == pytest.approx(2 / 6, abs=1e-4)
    assert result["unprimed"]["mean_ratio"] > 0.5
    rows = result["samples"]
    assert len(rows) == 12 and {r["primed"] for r in rows} == {True, False}
    assert all(r["own_distance"] is not None for r in rows) and rows[0]["style"] == "wa"
    assert result["scale"]["slant_sd"] > 0 and result["scale"]["size_sd"] > 0


def test_style_needs_two_measurable_writers():
    one = [*styles(("wa",)), Style("short", "short", "a", WRITERS["wb"][:10])]
    result = tq.measure_style(lambda *a: pytest.fail("no sampling"), one, ["x"])
    assert "skipped" in result and "1 of 2" in result["skipped"]


# The command line -------------------------------------------------------------------------------------------------


def test_the_command_line_measures_a_tiny_checkpoint_with_styles(ckpt, tmp_path, fake_ocr, capsys):
    model = tmp_path / "m.safetensors"
    model.write_bytes(ckpt.read_bytes())
    model.with_suffix(".json").write_bytes(ckpt.with_suffix(".json").read_bytes())
    write_styles(model, styles(("wa", "wc")))
    out = tmp_path / "report.json"
    argv = [str(model), "--num", "2", "--styles", "2", "--per-style", "1", "--out", str(out), "--seed", "3"]
    assert tq.main(argv) == 0
    captured = capsys.readouterr()
    assert captured.out == ""  # the report went to --out
    assert "legibility: 2 held-out line(s)" in captured.err and "style: 2 writer(s)" in captured.err
    report = json.loads(out.read_text())
    assert report["source"] == "library" and report["options"]["seed"] == 3
    assert [line["text"] for line in report["legibility"]["lines"]] == list(tq.HELD_OUT_TEXTS[:2])
    assert [line["seed"] for line in report["legibility"]["lines"]] == [3, 4]
    assert all(line["reading"] == "the" for line in report["legibility"]["lines"])
    style = report["style"]
    assert set(style["writers"]) == {"wa", "wc"} and style["primed"]["samples"] == 2
    assert style["unprimed"]["samples"] == 2


@pytest.mark.skipif(not tesseract_available(), reason="`tesseract` is not installed (apt-get install tesseract-ocr)")
def test_the_command_line_with_the_real_tesseract(ckpt, capsys):
    assert tq.main([str(ckpt), "--num", "1", "--styles", "0"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    (line,) = report["legibility"]["lines"]
    assert line["text"] == tq.HELD_OUT_TEXTS[0] and isinstance(line["reading"], str)
    assert line["cer"] >= 0 and 0 <= line["confidence"] <= 100 and line["points"] > 0
    assert report["style"] == {"skipped": "--styles 0"}
    assert "legibility: 1 held-out line(s): mean CER" in captured.err


def test_tesseract_missing_exits_1(ckpt, monkeypatch, capsys):
    monkeypatch.setattr(tq, "tesseract_available", lambda: False)
    assert tq.main([str(ckpt)]) == 1
    assert "tesseract is not installed" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, words",
    [
        (["--url", "localhost:8000"], "give the service's base URL"),
        (["--url", "ftp://host:21"], "give the service's base URL"),
        (["--url", "http://host:99999"], "port must be a number"),
        (["--url", "http://host:8000/?x=1"], "give the service's base URL"),
        (["--model", "m"], "go with --url"),
        (["--api-key", "k"], "go with --url"),
        (["--num", "0"], "must be 1 or more"),
        (["--styles", "21"], "must be at most 20"),
        (["--per-style", "11"], "must be at most 10"),
        (["--bias", "-1"], "must be a finite number >= 0"),
        (["--temperature", "0"], "must be a finite number > 0"),
        (["--data", "/no/such/corpus"], "no such folder"),
    ],
)
def test_bad_arguments_exit_2_saying_what_to_change(ckpt, capsys, args, words):
    with pytest.raises(SystemExit) as e:
        tq.main([str(ckpt), *args])
    assert e.value.code == 2 and words in capsys.readouterr().err


def test_a_good_url_is_taken_as_the_base():
    assert tq.check_url("http://localhost:8000/") == "http://localhost:8000"
    assert tq.check_url("https://example.org/vrnn") == "https://example.org/vrnn"


def test_bad_checkpoints_texts_and_counts_exit_2(ckpt, tmp_path, fake_ocr, capsys):
    assert tq.main([str(tmp_path / "none.safetensors")]) == 2
    assert "none.json: missing" in capsys.readouterr().err
    plain = write_tiny_checkpoint(tmp_path / "plain.safetensors", tiny_config("handwriting"))
    assert tq.main([str(plain)]) == 2
    assert "not a text checkpoint" in capsys.readouterr().err
    small = write_tiny_text_checkpoint(tmp_path / "small.safetensors", alphabet=TEXT_ALPHABET)
    assert tq.main([str(small)]) == 2
    assert "characters this model cannot write" in capsys.readouterr().err
    assert tq.main([str(ckpt), "--num", "25"]) == 2
    assert "only 24 texts" in capsys.readouterr().err
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    assert tq.main([str(ckpt), "--texts", str(empty)]) == 2
    assert "no text in it" in capsys.readouterr().err
    assert tq.main([str(ckpt), "--texts", str(tmp_path / "missing.txt")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_the_help_has_examples(capsys):
    with pytest.raises(SystemExit) as e:
        tq.main(["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "examples:" in out and "--url http://localhost:8000" in out and "--png-dir" in out
