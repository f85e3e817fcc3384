"""model.data.texts: the text of a line from the demo corpus's XML, IAM-OnDB's ascii/ files and JSON."""

from __future__ import annotations

import json

import pytest

from model.data.errors import DataError
from model.data.texts import iam_ascii_lines, line_text, text_from_json, text_from_xml

XML = """<?xml version="1.0" encoding="UTF-8"?>
<WhiteboardCaptureSession><General><Form id="w018-009" writerID="w018"/>
<Transcription><TextLine text="our quick forest watched,"/></Transcription></General>
<StrokeSet><Stroke><Point x="1" y="2" time="0"/></Stroke></StrokeSet></WhiteboardCaptureSession>"""

ASCII = """OCR:

A MOVE to stop Mr. Gaitskell from
nominating any more Labour

CSR:

A MOVE to stop Mr. Gaitskell from
nominating any more Labour
life Peers is to be made at a meeting
"""


def test_demo_xml_text():
    assert text_from_xml(XML) == "our quick forest watched,"
    assert (
        text_from_xml(XML.replace('<Transcription><TextLine text="our quick forest watched,"/></Transcription>', ""))
        is None
    )


def test_xml_entities_are_refused():
    hostile = '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "y">]><a><TextLine text="&x;"/></a>'
    with pytest.raises(DataError, match="DOCTYPE"):
        text_from_xml(hostile)


def test_iam_ascii_and_line_numbers(tmp_path):
    ascii_dir = tmp_path / "ascii" / "a01" / "a01-000"
    ascii_dir.mkdir(parents=True)
    (ascii_dir / "a01-000u.txt").write_text(ASCII, encoding="latin-1")
    assert iam_ascii_lines(ascii_dir / "a01-000u.txt")[2] == "life Peers is to be made at a meeting"
    line = tmp_path / "lineStrokes" / "a01" / "a01-000" / "a01-000u-02.xml"
    line.parent.mkdir(parents=True)
    line.write_text(XML.replace('<Transcription><TextLine text="our quick forest watched,"/></Transcription>', ""))
    assert line_text(line, tmp_path / "ascii") == "nominating any more Labour"
    assert line_text(line) is None  # no ascii root: no text
    missing = line.with_name("a01-000u-09.xml")
    missing.write_text(line.read_text())
    assert line_text(missing, tmp_path / "ascii") is None


def test_ascii_without_csr_is_an_error(tmp_path):
    (tmp_path / "x.txt").write_text("just text\n")
    with pytest.raises(DataError, match="CSR"):
        iam_ascii_lines(tmp_path / "x.txt")


def test_json_text(tmp_path):
    assert text_from_json(json.dumps({"strokes": [[[0, 0], [1, 1]]], "text": "hi there"})) == "hi there"
    assert text_from_json(json.dumps([[[0, 0], [1, 1]]])) is None
    with pytest.raises(DataError, match="'text' must be a string"):
        text_from_json(json.dumps({"strokes": [], "text": 3}))
    f = tmp_path / "l.json"
    f.write_text(json.dumps({"strokes": [[[0, 0]]], "text": "x"}))
    assert line_text(f) == "x"


def test_corpus_texts_follow_the_corpus_order(tmp_path):
    from model.data.handwriting import load_handwriting_corpus
    from model.data.texts import corpus_texts

    folder = tmp_path / "lines"
    folder.mkdir()
    for i in range(12):
        points = "".join(f'<Point x="{10 * k + i}" y="{(k * 7) % 13}" time="{k}"/>' for k in range(20))
        xml = XML.replace('<Point x="1" y="2" time="0"/>', points).replace("our quick forest watched,", f"line {i}")
        (folder / f"f{i:02d}.xml").write_text(xml)
    corpus = load_handwriting_corpus(folder, split_by="line", fractions=(0.5, 0.25, 0.25))
    texts = corpus_texts(corpus)
    for split in ("train", "valid", "test"):
        assert len(texts[split]) == len(corpus.names[split]) > 0
        for name, text in zip(corpus.names[split], texts[split], strict=True):
            assert text == f"line {int(name[1:3])}", (name, text)
