"""model.quality against known answers: a clean line of text reads, a scribble does not; slants and sizes drawn
with known values come back; zero-crossing rates and spectra of signals whose answers are known."""

from __future__ import annotations

import io
import itertools
import json
import math
import wave

import numpy as np
import pytest
from PIL import Image

from model import quality
from model.data.handwriting import strokes_to_offsets
from model.demo.hershey import load_font
from model.demo.writers import Writer, write_line

needs_tesseract = pytest.mark.skipif(not quality.tesseract_available(), reason="needs tesseract (tesseract-ocr)")


def line(text: str, slant_deg: float = 0.0, size: float = 1.0, seed: int = 0, font: str = "scripts") -> np.ndarray:
    """A line of `text` in a Hershey font by a neat writer, as (T, 3) offsets."""
    writer = Writer(
        id="w",
        font=font,
        size=size,
        aspect=1.0,
        slant=math.tan(math.radians(slant_deg)),
        letter_spacing=1.0,
        word_spacing=10.0,
        jitter=0.02,
        drift=0.0,
        speed=1.5,
    )
    strokes = write_line(text, load_font(font), writer, np.random.default_rng(seed), (0.0, 0.0))
    return strokes_to_offsets([s[:, :2] for s in strokes])


def test_render_scales_the_ink_to_a_fixed_height():
    for size in (0.5, 3.0):
        png = quality.render_png(line("hello world", size=size), ink_height_px=64)
        image = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
        rows = np.flatnonzero((image < 128).any(axis=1))
        assert 64 <= rows[-1] - rows[0] <= 64 * 2.5, (size, rows[-1] - rows[0])  # ascenders/descenders beyond 5-95 %
        assert image[0].min() == 255 and image[:, 0].min() == 255  # a white margin


@needs_tesseract
def test_clean_text_reads_and_jittered_text_reads_worse():
    truth = "sparrows argue over crumbs"
    clean = line(truth)
    reading = quality.read_png(quality.render_png(clean))
    assert reading.words >= 3 and reading.confidence > 40 and reading.letters >= 18, reading
    assert quality.char_error_rate(reading.text, truth) <= 0.15, reading
    shaken = clean.copy()
    shaken[:, :2] += np.random.default_rng(3).normal(0, 4.0, shaken[:, :2].shape)  # half a stroke's width
    worse = quality.read_png(quality.render_png(shaken))
    assert quality.char_error_rate(worse.text, truth) >= 0.3, worse


def test_char_error_rate():
    assert quality.char_error_rate("Hello  World", "hello world") == 0.0
    assert quality.char_error_rate("helo world", "hello world") == pytest.approx(1 / 11)
    assert quality.char_error_rate("", "abc") == 1.0
    assert quality.char_error_rate("xyz", "abc") == 1.0
    assert quality.char_error_rate("", "") == 0.0


def zigzag(slant_deg: float, height: float, letters: int = 40, seed: int = 0) -> np.ndarray:
    """Letters like a sheared "l": up and back down one slanted line of `height`, then a short baseline joint;
    pen-down runs of 4 letters with jittered points: a line whose slant and stroke height are known exactly."""
    rng = np.random.default_rng(seed)
    shear = math.tan(math.radians(slant_deg))
    strokes, x = [], 0.0
    for _ in range(letters // 4):
        pts = []
        for _ in range(4):
            pts += [(x, 0.0), (x + shear * height, height), (x, 0.0)]
            x += 0.4 * height
        pts.append((x, 0.0))
        legs = [np.linspace(a, b, 8, endpoint=False) for a, b in itertools.pairwise(pts)]
        dense = np.concatenate([*legs, [pts[-1]]])
        dense += rng.normal(0, 0.005 * height, dense.shape)
        strokes.append(np.stack([dense[:, 0], -dense[:, 1]], axis=1))  # y down, as strokes_to_offsets expects
        x += 1.0 * height
    return strokes_to_offsets(strokes)


@pytest.mark.parametrize("slant", [-10.0, 0.0, 20.0, 35.0])
def test_slant_and_size_come_back(slant):
    windows = quality.style_windows(zigzag(slant, height=50.0))
    assert len(windows) >= 3
    slants, sizes = np.array(windows).T
    assert np.all(np.abs(slants - slant) < 1.5), (slant, slants)
    assert np.all(np.abs(sizes - 50.0) < 2.5), sizes


def test_script_slant_grows_with_the_writers_slant():
    text = "minimum illumination in dull hills"
    measured = [np.median([w[0] for w in quality.style_windows(line(text, slant_deg=s))]) for s in (-5, 10, 25)]
    assert measured[0] < measured[1] - 5 < measured[2] - 10, measured


def test_script_size_comes_back_in_proportion():
    small = np.median([w[1] for w in quality.style_windows(line("minimum illumination", size=1.0))])
    large = np.median([w[1] for w in quality.style_windows(line("minimum illumination", size=2.0))])
    assert 1.7 < large / small < 2.3, (small, large)


def test_one_style_per_line_is_consistent_and_mixed_lines_are_not():
    styles = [(-5, 30.0), (10, 45.0), (25, 60.0), (40, 75.0)]  # four "writers": slant and stroke height
    styled = [zigzag(sl, h, seed=i) for i, (sl, h) in enumerate(styles)]
    consistent = quality.style_consistency(styled)
    assert consistent.slant_ratio < 0.2 and consistent.size_ratio < 0.2, consistent
    # Every line a patchwork of all four styles: within-line spread as large as across lines, or larger.
    mixed = [np.concatenate([styled[(i + k) % 4][i * 100 : (i + 1) * 100] for i in range(4)]) for k in range(4)]
    patch = quality.style_consistency(mixed)
    assert patch.slant_ratio > 1.0 and patch.size_ratio > 1.0, patch


def test_style_needs_two_measurable_lines():
    with pytest.raises(ValueError, match="at least two lines"):
        quality.style_consistency([line("minimum illumination")])


def test_zero_crossing_rate_of_known_signals():
    rate = 16000
    t = np.arange(rate) / rate
    assert quality.zero_crossing_rate(np.sin(2 * np.pi * 440 * t + 0.1)) == pytest.approx(2 * 440 / rate, rel=0.01)
    noise = np.random.default_rng(0).normal(size=rate)
    assert quality.zero_crossing_rate(noise) == pytest.approx(0.5, abs=0.02)
    assert quality.zero_crossing_rate(np.zeros(100)) == 0.0


def test_high_frequency_fraction_of_known_signals():
    rate = 16000
    t = np.arange(rate) / rate
    assert quality.high_frequency_fraction(np.sin(2 * np.pi * 300 * t), rate) < 1e-6
    assert quality.high_frequency_fraction(np.sin(2 * np.pi * 6000 * t), rate) > 1 - 1e-6
    mix = np.sin(2 * np.pi * 300 * t) + np.sin(2 * np.pi * 6000 * t)  # equal power
    assert quality.high_frequency_fraction(mix, rate) == pytest.approx(0.5, abs=1e-3)
    noise = np.random.default_rng(0).normal(size=rate)
    assert quality.high_frequency_fraction(noise, rate) == pytest.approx(0.5, abs=0.02)


def write_wav(path, samples: np.ndarray, rate: int = 16000) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())


def test_speech_command_line_compares_with_a_reference(tmp_path, capsys):
    rate = 16000
    t = np.arange(rate) / rate
    write_wav(tmp_path / "noise.wav", np.random.default_rng(0).uniform(-0.5, 0.5, rate))
    (tmp_path / "ref").mkdir()
    write_wav(tmp_path / "ref" / "tone.wav", 0.5 * np.sin(2 * np.pi * 200 * t))
    out = tmp_path / "q.json"
    argv = ["speech", str(tmp_path / "noise.wav"), "--reference", str(tmp_path / "ref"), "--json", str(out)]
    assert quality.main(argv) == 0
    result = json.loads(out.read_text())
    assert result["samples"]["zcr"]["mean"] > 0.4 > 0.1 > result["reference"]["zcr"]["mean"]
    assert result["samples"]["hf_fraction"]["mean"] > 0.4 > result["reference"]["hf_fraction"]["mean"]


def test_handwriting_command_line(tmp_path):
    files = []
    for i, text in enumerate(["minimum illumination", "dull hills at noon"]):
        files.append(tmp_path / f"l{i}.json")
        files[-1].write_text(json.dumps(line(text, slant_deg=10 * i).tolist()))
    out = tmp_path / "q.json"
    argv = ["handwriting", *map(str, files), "--no-ocr", "--json", str(out)]
    assert quality.main(argv) == 0
    result = json.loads(out.read_text())
    assert result["files"] == 2 and result["style"]["lines"] == 2 and "legibility" not in result


def test_missing_files_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        quality.main(["speech", str(tmp_path / "nope.wav")])
    assert e.value.code == 2
    assert "no such file" in capsys.readouterr().err


@needs_tesseract
def test_handwriting_command_line_with_texts(tmp_path):
    texts = ["sparrows argue over crumbs", "bring warm bread and honey"]
    files = []
    for i, text in enumerate(texts):
        files.append(tmp_path / f"l{i}.json")
        files[-1].write_text(json.dumps(line(text).tolist()))
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n")
    out = tmp_path / "q.json"
    argv = ["handwriting", *map(str, files), "--texts", str(tmp_path / "texts.txt"), "--png-dir", str(tmp_path)]
    assert quality.main([*argv, "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["cer"]["mean"] <= 0.2 and result["legibility"]["mean"] > 30, result
    assert (tmp_path / "l0.png").is_file()
    (tmp_path / "texts.txt").write_text(texts[0] + "\n")
    assert quality.main(argv) == 2  # one text for two files


def _text_doc(path, texts, offsets):
    """A text model's sample as `model.sample --text/--invent --out X.json` and the service's format=json write it."""
    doc = {"model": "m", "seed": 1, "texts": texts, "max_steps": None, "finished": [True] * len(texts)}
    path.write_text(json.dumps({**doc, "offsets": [o.tolist() for o in offsets]}))
    return path


def test_a_text_samples_json_gives_its_line_and_its_text(tmp_path):
    off = line("dull hills")
    got, text = quality.read_line(_text_doc(tmp_path / "t.json", ["dull hills"], [off]))
    np.testing.assert_allclose(got, off)
    assert text == "dull hills"
    plain = tmp_path / "p.json"
    plain.write_text(json.dumps(off.tolist()))
    got, text = quality.read_line(plain)
    np.testing.assert_allclose(got, off)
    assert text is None
    with pytest.raises(ValueError, match="holds 2 lines of text; measure one line per file"):
        quality.read_line(_text_doc(tmp_path / "two.json", ["a", "b"], [off, off]))


@needs_tesseract
def test_text_samples_are_measured_against_the_texts_they_carry(tmp_path):
    texts = ["sparrows argue over crumbs", "bring warm bread and honey"]
    files = [_text_doc(tmp_path / f"t{i}.json", [t], [line(t)]) for i, t in enumerate(texts)]
    out = tmp_path / "q.json"
    assert quality.main(["handwriting", *map(str, files), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [r["truth"] for r in result["readings"]] == texts and result["cer"]["mean"] <= 0.2, result
    swapped = [_text_doc(tmp_path / f"s{i}.json", [texts[1 - i]], [line(t)]) for i, t in enumerate(texts)]
    assert quality.main(["handwriting", *map(str, swapped), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["cer"]["mean"] > 0.5  # the wrong texts: the measure notices


def _ceiling_script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "scripts" / "legibility_ceiling.py"
    spec = importlib.util.spec_from_file_location("legibility_ceiling", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_ceiling_scripts_non_words_keep_the_lines_letters_and_word_lengths():
    import random

    v = _ceiling_script().variants("the quiet garden, please!", random.Random(3))
    assert v["words"] == "the quiet garden, please!"
    for name in ("shuffled letters", "random letters"):
        assert [len(w) for w in v[name].split()] == [3, 5, 7, 7], name
    assert sorted(v["shuffled letters"].replace(" ", "")) == sorted(v["words"].replace(" ", ""))
    assert v["shuffled letters"] != v["words"]


@needs_tesseract
def test_the_ceiling_script_reads_each_set_with_the_corpus_writers(tmp_path, capsys):
    writer = {"id": "w001", "font": "scripts", "size": 1.0, "aspect": 1.0, "slant": 0.1, "letter_spacing": 1.0,
              "word_spacing": 10.0, "jitter": 0.05, "drift": 0.0, "speed": 1.5}  # fmt: skip
    (tmp_path / "manifest.json").write_text(json.dumps({"writers": [writer]}))
    assert _ceiling_script().main(["--data", str(tmp_path), "--lines", "2"]) == 0
    out = capsys.readouterr().out
    assert all(f"{name}: " in out for name in ("words", "shuffled letters", "random letters")), out
