"""model.styles: named styles of a text checkpoint (NAME.styles.json), the command line that adds them from a corpus,
and the loader's refusals. The corpus is the small alphabet demo (4 writers, 24 lines, built in about a second)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from tinyckpt import STROKES, TEXT_ALPHABET, strokes_json, write_tiny_text_checkpoint

from model.data import read_handwriting
from model.data.handwriting import load_handwriting_file
from model.styles import (
    MAX_STYLE_POINTS,
    MAX_STYLES,
    MAX_STYLES_BYTES,
    Style,
    StylesError,
    load_styles,
    main,
    make_style,
    parse_styles,
    styles_path,
    write_styles,
)
from model.text import DEFAULT_ALPHABET


@pytest.fixture
def ckpt(tmp_path):
    return write_tiny_text_checkpoint(tmp_path / "text.safetensors", alphabet=DEFAULT_ALPHABET)


def _manifest(corpus):
    return {f["file"]: f for f in json.loads((corpus / "manifest.json").read_text())["files"]}


def test_the_command_line_adds_one_line_per_test_writer_as_an_upload_reads_it(corpus, ckpt, capsys):
    assert main([str(ckpt), "--data", str(corpus)]) == 0
    assert "w004" in capsys.readouterr().out
    path = ckpt.with_name("text.styles.json")
    assert styles_path(ckpt) == path and styles_path(ckpt.with_suffix(".json")) == path
    doc = json.loads(path.read_text())
    assert doc["format_version"] == 1 and list(doc["styles"]) == ["w004"]  # the by-writer split's test writer
    style = doc["styles"]["w004"]
    files = {f: m for f, m in _manifest(corpus).items() if m["writer"] == "w004" and m["text"] == style["text"]}
    assert style["writer"] == "w004" and len(files) == 1
    (rel,) = files
    raw = load_handwriting_file(corpus / rel)  # the line as an upload of it reads: raw units, first point kept
    assert len(raw) <= MAX_STYLE_POINTS
    assert np.array_equal(np.asarray(style["offsets"], dtype=np.float32), raw)
    # the first line of w004 in file order with at most MAX_STYLE_POINTS points (w004-001 and -002 have more)
    assert rel == "lineStrokes/w004/w004-003.xml"
    loaded = load_styles(ckpt, DEFAULT_ALPHABET)
    assert list(loaded) == ["w004"] and loaded["w004"].text == style["text"]
    assert loaded["w004"].offsets.dtype == np.float32 and np.array_equal(loaded["w004"].offsets, raw)


def test_per_writer_split_max_add_and_replace(corpus, ckpt):
    assert main([str(ckpt), "--data", str(corpus), "--split", "train", "--per-writer", "2"]) == 0
    assert list(load_styles(ckpt, DEFAULT_ALPHABET)) == ["w001", "w001-2", "w003", "w003-2"]
    assert main([str(ckpt), "--data", str(corpus)]) == 0  # adds to the styles there
    assert list(load_styles(ckpt, DEFAULT_ALPHABET)) == ["w001", "w001-2", "w003", "w003-2", "w004"]
    assert main([str(ckpt), "--data", str(corpus), "--split", "train", "--max", "1", "--replace"]) == 0
    assert list(load_styles(ckpt, DEFAULT_ALPHABET)) == ["w001"]


def test_only_lines_whose_characters_the_alphabet_holds(corpus, tmp_path, capsys):
    small = write_tiny_text_checkpoint(tmp_path / "small.safetensors")  # " abcdehlorw": no corpus line fits
    assert main([str(small), "--data", str(corpus)]) == 2
    assert "no test line has a text this model can write" in capsys.readouterr().err
    assert not styles_path(small).exists()


@pytest.mark.parametrize(
    "args, words",
    [
        (["--data", "MISSING"], "no such file or folder"),
        (["--per-writer", "0"], "must be 1 or more"),
        (["--max", str(MAX_STYLES + 1)], f"must be at most {MAX_STYLES}"),
        (["--split", "dev"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_2_saying_what_to_change(corpus, ckpt, capsys, args, words):
    argv = [str(ckpt), "--data", str(corpus), *args]
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and words in capsys.readouterr().err


def test_bad_checkpoints_exit_2(corpus, tmp_path, capsys):
    assert main([str(tmp_path / "none.safetensors"), "--data", str(corpus)]) == 2
    assert "missing" in capsys.readouterr().err
    from tinyckpt import tiny_config, write_tiny_checkpoint

    plain = write_tiny_checkpoint(tmp_path / "plain.safetensors", tiny_config("handwriting"))
    assert main([str(plain), "--data", str(corpus)]) == 2
    assert "not a text checkpoint" in capsys.readouterr().err


def test_the_help_has_an_example():
    out = subprocess.run([sys.executable, "-m", "model.styles", "--help"], capture_output=True, text=True, check=True)
    assert "example:" in out.stdout and "--data data/handwriting-alphabet" in out.stdout


def _style(name="w001", text="hello world", offsets=None):
    return make_style(name, name, text, read_handwriting(strokes_json()) if offsets is None else offsets, TEXT_ALPHABET)


def test_offsets_round_trip_exactly(tmp_path):
    odd = read_handwriting(strokes_json())
    odd[:, :2] /= np.float32(7.3)  # not whole numbers
    ckpt = tmp_path / "m.safetensors"
    write_styles(ckpt, [_style(), _style("w002", "  abc ", odd)])
    back = load_styles(ckpt, TEXT_ALPHABET)
    assert back["w002"].text == "abc"  # white space folded, as a prime's text is
    assert np.array_equal(back["w002"].offsets, odd) and np.array_equal(back["w001"].offsets, _style().offsets)
    assert len(back["w001"].offsets) == sum(len(s) for s in STROKES)


@pytest.mark.parametrize(
    "doc, words",
    [
        ("{not json", "not valid JSON"),
        ('{"format_version": 2, "styles": {}}', "format_version 2"),
        ('{"format_version": 1}', '"styles"'),
        ('{"format_version": 1, "styles": {"a b": {}}}', "not usable"),
        (
            '{"format_version": 1, "styles": {"w1": {"writer": "w1", "text": "hi?", "offsets": [[0,0,1],[1,1,1]]}}}',
            "'?'",
        ),
        (
            '{"format_version": 1, "styles": {"w1": {"writer": "w1", "text": "hello", "offsets": [[0,0,2],[1,1,1]]}}}',
            "pen",
        ),
        (
            '{"format_version": 1, "styles": {"w1": {"writer": "w1", "text": "hello", "offsets": [[0,0]]}}}',
            "[dx, dy, pen]",
        ),
        (
            '{"format_version": 1, "styles": {"w1": {"writer": "w1", "text": "", "offsets": [[0,0,1],[1,1,1]]}}}',
            "1 to 99",
        ),
    ],
)
def test_broken_styles_files_are_refused_saying_what_is_wrong(doc, words):
    with pytest.raises(StylesError, match="styles") as e:
        parse_styles(doc, TEXT_ALPHABET)
    assert words in str(e.value)


def test_bounds(tmp_path):
    long = np.zeros((MAX_STYLE_POINTS + 1, 3), dtype=np.float32)
    with pytest.raises(StylesError, match=f"2 to {MAX_STYLE_POINTS} points"):
        _style(offsets=long)
    with pytest.raises(StylesError, match=f"at most {MAX_STYLES}"):
        write_styles(tmp_path / "m", [_style(f"w{i}") for i in range(MAX_STYLES + 1)])
    path = styles_path(tmp_path / "m")
    path.write_bytes(b" " * (MAX_STYLES_BYTES + 1))
    with pytest.raises(StylesError, match=f"more than the {MAX_STYLES_BYTES}"):
        load_styles(tmp_path / "m.safetensors", TEXT_ALPHABET)
    assert load_styles(tmp_path / "other.safetensors", TEXT_ALPHABET) == {}  # none: no styles
    assert isinstance(_style(), Style)
