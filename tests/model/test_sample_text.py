"""`python -m model.sample --text`: a text checkpoint writes lines of text (SVG stacked as the service stacks them, or
the service's JSON), in a named style or primed with a line and its text, and each misuse exits 2 saying what to do.
End to end through `model.sample.main` on the tiny text checkpoint (tests/tinyckpt.py), with few pen steps."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from tinyckpt import STROKES, TEXT, TEXT_ALPHABET, strokes_json, tiny_config, write_tiny_checkpoint
from tinyckpt import write_tiny_text_checkpoint as write_text_checkpoint

from model import defaults, inference, render
from model.data import read_handwriting
from model.sample import EXAMPLES, main
from model.styles import make_style, write_styles

SVG = "{http://www.w3.org/2000/svg}"
STEPS = "12"  # a short cap per line keeps every test fast


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_text_checkpoint(tmp_path_factory.mktemp("text") / f"{TEXT}.safetensors")


@pytest.fixture(scope="module")
def styled(tmp_path_factory):
    path = write_text_checkpoint(tmp_path_factory.mktemp("styled") / f"{TEXT}.safetensors")
    write_styles(path, [make_style("w7", "w7", "hello", read_handwriting(strokes_json()), TEXT_ALPHABET)])
    return path


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("plain") / "hand.safetensors", tiny_config("handwriting"))


@pytest.fixture(scope="module")
def prime_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("prime") / "mine.json"
    path.write_text(json.dumps(STROKES))
    return path


def sample(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def direct(ckpt, lines, seed, **kwargs):
    """generate_text as the command line calls it: its default bias for text is model.defaults.TEXT_BIAS."""
    model, meta = inference.load(ckpt, text=True)
    kwargs.setdefault("bias", defaults.TEXT_BIAS)
    return inference.generate_text(model, meta, lines, max_steps=int(STEPS), seed=seed, **kwargs), meta


def test_two_lines_are_stacked_as_the_service_stacks_them(ckpt, tmp_path, capsys):
    out = tmp_path / "note.svg"
    code, stdout, err = sample(capsys, ckpt, "--out", out, "--text", "hello\\nworld", "--steps", STEPS, "--seed", 3)
    assert code == 0, err
    assert f"wrote {out}: 2 lines of handwriting" in stdout and "--seed 3 reproduces it" in stdout
    (raws, _), _ = direct(ckpt, ["hello", "world"], 3)
    assert out.read_text() == render.handwriting_lines_svg(raws)  # byte for byte
    root = ET.fromstring(out.read_text())
    assert root.tag == f"{SVG}svg" and root.findall(f".//{SVG}path")
    # a real newline splits as the two characters backslash-n do
    again = tmp_path / "again.svg"
    assert main([str(ckpt), "--out", str(again), "--text", "hello\nworld", "--steps", STEPS, "--seed", "3"]) == 0
    assert again.read_bytes() == out.read_bytes()


def test_json_is_the_services_shape_and_the_same_seed_gives_the_same_files(ckpt, tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    for path in (a, b):
        code, _, err = sample(capsys, ckpt, "--out", path, "--text", "hello\\nworld", "--steps", STEPS, "--seed", 5)
        assert code == 0, err
    assert a.read_bytes() == b.read_bytes()
    doc = json.loads(a.read_text())
    (raws, finished), meta = direct(ckpt, ["hello", "world"], 5)
    assert doc == inference.text_sample_json(meta["name"], 5, ["hello", "world"], int(STEPS), finished, raws)
    assert doc["texts"] == ["hello", "world"] and doc["seed"] == 5 and doc["output"] == "sample"
    assert [len(r) for r in doc["offsets"]] == [len(r) for r in raws]
    assert all(row[2] in (0, 1) for line in doc["offsets"] for row in line)


def test_num_writes_one_file_per_seed_and_mean_modes(ckpt, tmp_path, capsys):
    out = tmp_path / "many.json"
    code, stdout, err = sample(capsys, ckpt, "--out", out, "--text", "hello", "--steps", STEPS, "--seed", 7, "--num", 2)
    assert code == 0, err
    assert "seeds 7 to 8" in stdout
    docs = [json.loads((tmp_path / f"many_{i}.json").read_text()) for i in range(2)]
    assert [d["seed"] for d in docs] == [7, 8]
    one = tmp_path / "one.json"  # file i is what --seed 7 + i writes alone
    assert main([str(ckpt), "--out", str(one), "--text", "hello", "--steps", STEPS, "--seed", "8"]) == 0
    assert json.loads(one.read_text()) == docs[1]
    for flag, output in (("--mean", "mean"), ("--component-mean", "component-mean")):
        path = tmp_path / f"{output}.json"
        assert main([str(ckpt), "--out", str(path), "--text", "hello", "--steps", STEPS, "--seed", "1", flag]) == 0
        doc = json.loads(path.read_text())
        (raws, _), _ = direct(ckpt, ["hello"], 1, mean=output if output != "mean" else True)
        assert doc["output"] == output and doc["offsets"] == [inference.offset_rows(r) for r in raws]


def test_a_named_style_and_a_prime_with_its_text(styled, prime_file, tmp_path, capsys):
    out = tmp_path / "styled.json"
    code, stdout, err = sample(
        capsys, styled, "--out", out, "--text", "world", "--style", "w7", "--steps", STEPS, "--seed", 2
    )
    assert code == 0, err
    assert "in style w7" in stdout
    style_prime = read_handwriting(strokes_json())
    (raws, _), _ = direct(styled, ["world"], 2, prime=style_prime, prime_text="hello")
    assert json.loads(out.read_text())["offsets"] == [inference.offset_rows(r) for r in raws]
    # the same line uploaded with its text primes the same way
    mine = tmp_path / "mine.json"
    args = ["--text", "world", "--prime", prime_file, "--prime-text", "hello", "--steps", STEPS, "--seed", 2]
    code, stdout, err = sample(capsys, styled, "--out", mine, *args)
    assert code == 0, err
    assert f"in the style of {prime_file}" in stdout
    assert mine.read_bytes() == out.read_bytes()


@pytest.mark.parametrize(
    ("which", "args", "words"),
    [
        ("plain", ["--text", "hello"], ["does not write text", "remove --text"]),
        ("text", [], ["writes text", "--text TEXT"]),
        ("text", ["--text", "hello, World"], ["cannot write", "','", "'W'", "remove or replace"]),
        ("text", ["--text", "hello\\n"], ["--text (line 2 of 2)", "empty"]),
        ("styled", ["--text", "hello", "--style", "nope"], ["no style 'nope'", "w7", "--prime FILE --prime-text"]),
        ("text", ["--text", "hello", "--style", "w7"], ["no named styles", "python -m model.styles"]),
        ("text", ["--text", "hello", "--prime", "PRIME"], ["needs the text written in it", "--prime-text TEXT"]),
        ("text", ["--text", "hello", "--prime-text", "hello"], ["--prime-text is the text", "--prime FILE"]),
        ("styled", ["--text", "hi", "--style", "w7", "--prime", "PRIME", "--prime-text", "a"], ["give one of them"]),
        ("text", ["--text", "hello", "--prime", "PRIME", "--prime-text", "xyz"], ["--prime-text", "'x'"]),
        ("text", ["--style", "w7"], ["--style is the style to write --text in", "give --text"]),
        ("text", ["--text", "hello", "--seconds", "1"], ["--seconds applies to speech", "--steps"]),
        ("plain", ["--invent"], ["does not write text", "remove --invent"]),
        ("text", ["--invent"], ["--invent: Text-VRNN-GMM has no word model", "python -m model.wordlm"]),
        ("text", ["--invent", "--text", "hello"], ["--invent makes up the line", "remove one of them"]),
    ],
)
def test_misuse_exits_2_saying_what_to_do(which, args, words, ckpt, styled, plain, prime_file, tmp_path, capsys):
    path = {"plain": plain, "text": ckpt, "styled": styled}[which]
    args = [str(prime_file) if a == "PRIME" else a for a in args]
    steps = [] if "--seconds" in args else ["--steps", STEPS]  # argparse refuses the two together
    code, stdout, err = sample(capsys, path, "--out", tmp_path / "x.svg", *args, *steps)
    assert code == 2 and stdout == ""
    assert err.startswith("error: ") and "Traceback" not in err
    for w in words:
        assert w in err, (w, err)
    assert not (tmp_path / "x.svg").exists()


def test_text_with_wav_or_analyze_exits_2(ckpt, prime_file, tmp_path, capsys):
    code, _, err = sample(capsys, ckpt, "--out", tmp_path / "x.wav", "--text", "hello")
    assert code == 2 and "--text writes handwriting, as .svg" in err
    code, _, err = sample(capsys, ckpt, "--out", tmp_path / "x.png", "--analyze", prime_file, "--text", "hello")
    assert code == 2 and "takes no sampling options (--text)" in err


def test_the_help_shows_writing_text():
    assert "--text 'hello\\nworld'" in EXAMPLES and "--prime-text" in EXAMPLES


def test_a_cut_line_is_reported(ckpt, tmp_path, capsys):
    code, stdout, _ = sample(capsys, ckpt, "--out", tmp_path / "c.svg", "--text", "hello", "--steps", 1, "--seed", 0)
    assert code == 0
    doc_path = tmp_path / "c.json"
    assert main([str(ckpt), "--out", str(doc_path), "--text", "hello", "--steps", "1", "--seed", "0"]) == 0
    finished = json.loads(doc_path.read_text())["finished"]
    assert finished == [False] and "--steps 1 cut line 1" in stdout
    assert np.asarray(json.loads(doc_path.read_text())["offsets"][0]).shape == (1, 3)


def test_invent_writes_the_lines_the_word_model_makes_up(tmp_path, capsys):
    from model.wordlm import count_lines, write_wordlm

    ckpt = write_text_checkpoint(tmp_path / f"{TEXT}.safetensors")
    lm = count_lines(["hello world", "a red door", "old bread"])
    lm.steps_per_char = 3.0
    write_wordlm(ckpt, lm)
    args = ["--out", tmp_path / "m.json", "--invent", "--num", 2, "--seed", 3, "--steps", 40]
    code, stdout, _ = sample(capsys, ckpt, *args)
    assert code == 0 and "a line its word model made up (seeds 3 to 4" in stdout
    for i in range(2):
        doc = json.loads((tmp_path / f"m_{i}.json").read_text())
        text = lm.line(3 + i, 40)
        assert doc["invented"] is True and doc["texts"] == [text] and doc["max_steps"] == 40 and repr(text) in stdout
        raws, _ = direct_steps(ckpt, [text], 3 + i, 40)
        assert doc["offsets"] == [inference.offset_rows(r) for r in raws]
    code, _, err = sample(capsys, ckpt, "--out", tmp_path / "s.svg", "--invent", "--steps", 2)
    assert code == 2 and "--steps 2 leave no room for a word" in err


def direct_steps(ckpt, lines, seed, steps):
    model, meta = inference.load(ckpt, text=True)
    return inference.generate_text(model, meta, lines, max_steps=steps, seed=seed, bias=defaults.TEXT_BIAS)
