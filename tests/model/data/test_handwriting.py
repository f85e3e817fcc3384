"""Handwriting loading: IAM XML, JSON, .npy; y flip and pen bits; hostile XML; clipping; corpus errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from datakit import BILLION_LAUGHS, EXTERNAL_ENTITY, iam_xml, random_strokes

from model.data import (
    DataError,
    check_offsets,
    load_handwriting_corpus,
    load_handwriting_file,
    offsets_to_strokes,
    parse_iam_xml,
    read_handwriting,
    strokes_to_offsets,
)


def test_iam_xml_with_several_strokes(tmp_path):
    strokes = [[(100, 500), (103, 498), (110, 490)], [(120, 500)], [(130, 505), (131, 510)]]
    path = tmp_path / "a01-000u-01.xml"
    path.write_text(iam_xml(strokes), encoding="iso-8859-1")
    x = load_handwriting_file(path)
    assert x.dtype == np.float32 and x.shape == (6, 3)
    expected = [
        [0, 0, 0],
        [3, 2, 0],  # y 500 -> 498 is a move up: dy = +2
        [7, 8, 1],  # last point of stroke 1
        [10, -10, 1],  # a one-point stroke: its only point ends it
        [10, -5, 0],  # pen-up jump to stroke 3, then down
        [1, -5, 1],
    ]
    np.testing.assert_array_equal(x, np.asarray(expected, dtype=np.float32))


def test_offsets_back_to_strokes():
    rng = np.random.default_rng(0)
    strokes = [np.asarray(s, dtype=np.float64) for s in random_strokes(rng, 4, 15)]
    back = offsets_to_strokes(strokes_to_offsets(strokes))
    assert len(back) == 4
    # Same shapes up to a translation and the y flip.
    origin = strokes[0][0]
    for a, b in zip(strokes, back, strict=True):
        np.testing.assert_allclose(b, (a - origin) * [1, -1])


def test_malformed_xml(tmp_path):
    with pytest.raises(DataError, match=r"bad\.xml: not well-formed XML"):
        read_handwriting(b"<WhiteboardCaptureSession><StrokeSet><Stroke>", "bad.xml")
    with pytest.raises(DataError, match="without numeric x and y"):
        read_handwriting(iam_xml([[(1, 2)]]).replace('x="1"', 'x="one"'), "x.xml")
    with pytest.raises(DataError, match="no StrokeSet > Stroke > Point"):
        read_handwriting("<WhiteboardCaptureSession><StrokeSet/></WhiteboardCaptureSession>", "e.xml")


@pytest.mark.parametrize("doc", [BILLION_LAUGHS, EXTERNAL_ENTITY], ids=["billion-laughs", "external-entity"])
def test_entity_attacks_are_refused_before_expansion(doc):
    with pytest.raises(DataError, match="DOCTYPE/ENTITY declarations are not allowed"):
        parse_iam_xml(doc.encode(), "attack.xml")


def test_doctype_in_utf16_is_refused_too():
    with pytest.raises(DataError, match="DOCTYPE"):
        parse_iam_xml(BILLION_LAUGHS.replace('version="1.0"', 'version="1.0" encoding="UTF-16"').encode("utf-16"))


def test_json_strokes_and_offsets(tmp_path):
    strokes = [[[100, 500], [103, 498]], [[120, 500], [121, 501], [122, 503]]]
    (tmp_path / "s.json").write_text(json.dumps(strokes))
    x = load_handwriting_file(tmp_path / "s.json")
    np.testing.assert_array_equal(x[:, 2], [0, 1, 0, 0, 1])
    np.testing.assert_array_equal(x[1], [3, 2, 1])
    # A list of (dx, dy, pen) rows is taken as offsets, as the service returns them.
    (tmp_path / "o.json").write_text(json.dumps(x.tolist()))
    np.testing.assert_array_equal(load_handwriting_file(tmp_path / "o.json"), x)
    with pytest.raises(DataError, match=r"stroke 0, point 1: expected \[x, y\]"):
        read_handwriting(json.dumps([[[1, 2], [3]]]), "j.json")
    with pytest.raises(DataError, match="not valid JSON"):
        read_handwriting("[[[1, 2]", "j.json")


def test_npy_offsets_and_shapes(tmp_path):
    x = np.array([[0, 0, 0], [1.5, -2, 0], [3, 1, 1]], dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    np.testing.assert_array_equal(load_handwriting_file(tmp_path / "x.npy"), x)
    np.save(tmp_path / "bad.npy", np.zeros((5, 4)))
    with pytest.raises(DataError, match=r"shape \(T, 3\).*got shape \(5, 4\)"):
        load_handwriting_file(tmp_path / "bad.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"not a readable \.npy"):
        load_handwriting_file(tmp_path / "obj.npy")  # never unpickled
    with pytest.raises(DataError, match="pen column"):
        check_offsets(np.array([[0, 0, 0.5]]))
    with pytest.raises(DataError, match="non-finite"):
        check_offsets(np.array([[np.nan, 0, 0]]))


def _line_folder(tmp_path, n=30, jump=None):
    rng = np.random.default_rng(1)
    root = tmp_path / "lineStrokes"
    for i in range(n):
        strokes = random_strokes(rng, 3, 40)
        if jump is not None:  # a far pen jump, as to the next line of a form
            strokes.append([(p[0] + jump, p[1] + jump) for p in strokes[-1]])
        sub = root / f"a{i % 4:02d}" / f"a{i % 4:02d}-{i:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"line{i:02d}.xml").write_text(iam_xml(strokes))
    return root


def test_corpus_splits_and_normalisation(tmp_path):
    root = _line_folder(tmp_path)
    c = load_handwriting_corpus(root)
    assert {s: len(c.split(s)) for s in ("train", "valid", "test")} == {"train": 26, "valid": 2, "test": 2}
    names = [set(c.names[s]) for s in ("train", "valid", "test")]
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
    assert len(set().union(*names)) == 30
    pen = np.concatenate([x[:, 2] for x in c.train])
    assert set(np.unique(pen)) == {0.0, 1.0}  # pen bits untouched by normalisation
    d = np.concatenate([x[:, :2] for x in c.train]).ravel()
    assert abs(d.std() - 1) < 1e-3
    again = load_handwriting_corpus(root)
    assert again.names == c.names and again.stats == c.stats
    assert load_handwriting_corpus(root, seed=5).names["test"] != c.names["test"]


def test_far_jumps_do_not_dominate_the_std(tmp_path):
    plain = load_handwriting_corpus(_line_folder(tmp_path / "a")).stats
    jumpy = load_handwriting_corpus(_line_folder(tmp_path / "b", jump=20_000)).stats
    assert jumpy.clip is not None and jumpy.clip < 1_000
    # Clipped at 30 robust stds the jump still counts, but as a word gap would; unclipped it is ~30x larger.
    assert jumpy.std < 3 * plain.std
    unclipped = load_handwriting_corpus(_line_folder(tmp_path / "c", jump=20_000), clip_mads=None).stats
    assert unclipped.std > 10 * plain.std


def test_bad_files_skipped_with_a_count_and_errors(tmp_path):
    root = _line_folder(tmp_path, n=5)
    (root / "malformed.xml").write_text("<WhiteboardCaptureSession><StrokeSet>")
    (root / "attack.xml").write_text(BILLION_LAUGHS)
    (root / "manifest.json").write_text('{"kind": "demo"}')  # corpus metadata, not a line: ignored
    with pytest.warns(UserWarning, match="skipped 2 of 7 files") as w:
        c = load_handwriting_corpus(root)
    assert "malformed.xml" in str(w[0].message)
    assert sorted(n for n, _ in c.skipped) == ["attack.xml", "malformed.xml"]

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.xml").write_text("nope")
    with pytest.warns(UserWarning), pytest.raises(DataError, match="none of the 1 handwriting files could be used"):
        load_handwriting_corpus(bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as e:
        load_handwriting_corpus(tmp_path / "empty")
    assert str(tmp_path / "empty") in str(e.value) and ".xml" in str(e.value) and ".json" in str(e.value)
