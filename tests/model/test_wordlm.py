"""model.wordlm: the word bigram a text model makes its lines up from. Its distributions are checked against the
formula computed independently from raw counts, they sum to one and lines' probabilities sum to one; draws follow
the distributions (chi-square); a seed gives one line; a budget is kept; the file round-trips and every bound is
refused with a message naming the file; the command line builds it from a corpus (the small alphabet demo)."""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter

import numpy as np
import pytest
from scipy import stats
from tinyckpt import write_tiny_text_checkpoint

from model.data.handwriting import load_handwriting_corpus, load_handwriting_file
from model.data.texts import line_text
from model.text import DEFAULT_ALPHABET
from model.wordlm import (
    DISCOUNT,
    MAX_LINE_CHARS,
    MAX_WORDLM_BYTES,
    SUFFIX,
    WordLMError,
    count_lines,
    load_wordlm,
    main,
    parse_wordlm,
    wordlm_path,
    write_wordlm,
)
from worker import contract

LINES = ["the old river", "the river ran", "a dog ran", "the dog", "a river", "ran"]


def reference(lines: list[str], prev: str | None, d: float = DISCOUNT) -> dict[str, float]:
    """p(. | prev) from the textbook formula, computed from the lines' tokens alone."""
    seqs = [["<s>", *line.split(), "</s>"] for line in lines]
    pairs = Counter((a, b) for s in seqs for a, b in itertools.pairwise(s))
    vocab = [w for w in dict.fromkeys(t for s in seqs for t in s) if w != "<s>"]
    cont = {w: len({a for (a, b) in pairs if b == w}) for w in vocab}
    total_cont = sum(cont.values())
    ctx = prev or "<s>"
    c_prev = sum(c for (a, _), c in pairs.items() if a == ctx)
    types = len({b for (a, b) in pairs if a == ctx})
    p = {w: max(pairs[(ctx, w)] - d, 0) / c_prev + d * types / c_prev * cont[w] / total_cont for w in vocab}
    if prev is None:
        p["</s>"] = 0.0
        s = sum(p.values())
        p = {w: v / s for w, v in p.items()}
    return p


@pytest.fixture
def lm():
    return count_lines(LINES)


def _by_word(lm, prev):
    p = lm.distribution(None if prev is None else lm.words.index(prev))
    return {**{w: p[i] for i, w in enumerate(lm.words)}, "</s>": p[lm.end]}


@pytest.mark.parametrize("prev", [None, "the", "river", "ran", "dog", "old", "a"])
def test_each_distribution_is_the_formula_and_sums_to_one(lm, prev):
    got, want = _by_word(lm, prev), reference(LINES, prev)
    assert got.keys() == want.keys()
    for w in want:
        assert got[w] == pytest.approx(want[w], abs=1e-12), w
    assert sum(got.values()) == pytest.approx(1.0, abs=1e-12)
    assert all(v > 0 for w, v in got.items() if not (prev is None and w == "</s>"))


def test_the_probabilities_of_all_lines_sum_to_one(lm):
    assert lm.lengths == dict(Counter(len(x.split()) for x in LINES))
    mass = {
        n: sum(math.exp(lm.log_prob(" ".join(seq))) for seq in itertools.product(lm.words, repeat=n))
        for n in range(1, 5)
    }
    for n, lines in lm.lengths.items():  # each length has its share of the corpus's lines
        assert mass[n] == pytest.approx(lines / len(LINES), abs=1e-12)
    assert mass[4] == 0 and sum(mass.values()) == pytest.approx(1.0, abs=1e-12)
    assert lm.log_prob("the unicorn") == -math.inf
    # a line's words: each given the one before and that the line goes on
    p = reference(LINES, None)["the"] * reference(LINES, "the")["river"] / (1 - reference(LINES, "the")["</s>"])
    assert lm.log_prob("the river") == pytest.approx(math.log(lm.lengths[2] / len(LINES) * p), abs=1e-12)


def test_draws_follow_the_distributions(lm):
    rng = np.random.default_rng(0)
    n = 6000
    firsts, after_the, sizes = Counter(), Counter(), Counter()
    for _ in range(n):
        words = lm.draw(rng).split()
        firsts[words[0]] += 1
        sizes[len(words)] += 1
        for a, b in itertools.pairwise(words):
            if a == "the":
                after_the[b] += 1
    going_on = {w: v / (1 - reference(LINES, "the")["</s>"]) for w, v in reference(LINES, "the").items() if w != "</s>"}
    shares = {k: c / len(LINES) for k, c in lm.lengths.items()}
    for counts, p in ((firsts, _by_word(lm, None)), (after_the, going_on), (sizes, shares)):
        keys = [w for w in p if p[w] > 0]
        observed = np.array([counts[w] for w in keys], dtype=float)
        expected = np.array([p[w] for w in keys]) * observed.sum()
        assert stats.chisquare(observed, expected).pvalue > 1e-3


def test_a_seed_gives_one_line_and_seeds_differ(lm):
    assert [lm.line(s) for s in range(20)] == [lm.line(s) for s in range(20)]
    assert len({lm.line(s) for s in range(40)}) > 5
    assert count_lines(LINES).line(3) == lm.line(3)  # a fresh model of the same counts: the same line


def test_a_budget_is_kept_and_a_budget_for_no_word_gives_none(lm):
    lm.steps_per_char = 10.0
    assert lm.max_chars(None) == MAX_LINE_CHARS and lm.max_chars(45) == 4
    for seed in range(50):
        line = lm.line(seed, 45)
        assert line is not None and len(line) <= 4 and set(line.split()) <= set(lm.words)
    assert lm.line(0, 15) == "a"  # one character: only "a" fits
    assert lm.line(0, 9) is None  # no character: no word fits
    lm.steps_per_char = None
    assert lm.max_chars(5) == MAX_LINE_CHARS


def test_when_no_draw_fits_the_longest_word_boundary_cut_is_taken(monkeypatch):
    lm = count_lines(["alpha beta gamma delta epsilon"])
    lm.steps_per_char = 1.0
    draws = iter(["alpha beta gamma delta epsilon", "alpha beta gamma delta", *["epsilon alpha beta gamma"] * 70])
    monkeypatch.setattr(lm, "draw", lambda rng: next(draws))
    assert lm.line(0, 16) == "alpha beta gamma"  # the longest cut of the DRAWS draws (the third's is 13)


def test_the_file_round_trips(lm, tmp_path):
    lm.steps_per_char = 9.5
    ckpt = tmp_path / "m.safetensors"
    path = write_wordlm(ckpt, lm)
    assert path == wordlm_path(ckpt) == tmp_path / f"m{SUFFIX}"
    back = load_wordlm(ckpt, " adeghilnortv")
    assert back.words == lm.words and back.steps_per_char == 9.5
    for prev in [None, *range(lm.vocabulary)]:
        np.testing.assert_array_equal(back.distribution(prev), lm.distribution(prev))
    assert [back.line(s, 60) for s in range(10)] == [lm.line(s, 60) for s in range(10)]
    assert load_wordlm(tmp_path / "other.safetensors", DEFAULT_ALPHABET) is None


def _doc(lm, **change):
    doc = lm.to_json()
    doc.update(change)
    return json.dumps(doc)


@pytest.mark.parametrize(
    "change, words",
    [
        ({"format_version": 2}, "format_version 1 expected"),
        ({"words": []}, "'words' must be a list of 1 to"),
        ({"words": ["the", "the", "river", "ran", "a", "dog"]}, "appears twice"),
        ({"words": ["the", "old", "river", "ran", "a", "zebra"]}, "'z'"),
        ({"words": ["the", "old river", "x", "ran", "a", "dog"]}, "not a word"),
        ({"starts": []}, "'starts' must be a non-empty list"),
        ({"starts": [[99, 1]]}, "'starts' row [99, 1]"),
        ({"bigrams": [[0, 7, 1]]}, "'bigrams' row [0, 7, 1]"),
        ({"bigrams": [[0, 1, 0]]}, "count >= 1"),
        ({"bigrams": [[0, 1, 1], [0, 1, 2]]}, "'bigrams' row [0, 1, 2]"),
        ({"discount": 1.5}, "'discount' must be a number between 0 and 1"),
        ({"lengths": []}, "'lengths' must be a non-empty list"),
        ({"lengths": [[0, 3]]}, "'lengths' row [0, 3]"),
        ({"lengths": [[2, 1], [2, 5]]}, "'lengths' row [2, 5]"),
        ({"steps_per_char": -1}, "'steps_per_char' must be a positive number"),
    ],
)
def test_a_broken_file_is_refused_saying_what_is_wrong(lm, tmp_path, change, words):
    path = tmp_path / f"m{SUFFIX}"
    path.write_text(_doc(lm, **change))
    with pytest.raises(WordLMError, match=None) as e:
        load_wordlm(tmp_path / "m.safetensors", " adeghilnortv")
    assert words in str(e.value) and str(path) in str(e.value)


def test_bad_json_and_a_too_large_file_are_refused_unread(tmp_path):
    path = tmp_path / f"m{SUFFIX}"
    path.write_text("{broken")
    with pytest.raises(WordLMError, match="not valid JSON"):
        load_wordlm(tmp_path / "m.safetensors", DEFAULT_ALPHABET)
    path.write_bytes(b" " * (MAX_WORDLM_BYTES + 1))
    with pytest.raises(WordLMError, match=f"more than the {MAX_WORDLM_BYTES}"):
        load_wordlm(tmp_path / "m.safetensors", DEFAULT_ALPHABET)
    with pytest.raises(WordLMError, match="no line has a word"):
        count_lines(["", "  "])


def test_the_service_contract_holds_the_same_file_name_and_bound():
    assert contract.WORDLM_SUFFIX == SUFFIX and contract.MAX_WORDLM_BYTES == MAX_WORDLM_BYTES
    assert parse_wordlm(_doc(count_lines(["ab"])), "ab ").words == ["ab"]


# The command line, on a corpus ------------------------------------------------------------------------------------


def test_the_command_line_counts_the_train_lines_and_their_pace(corpus, tmp_path, capsys):
    ckpt = write_tiny_text_checkpoint(tmp_path / "text.safetensors", alphabet=DEFAULT_ALPHABET)
    assert main([str(ckpt), "--data", str(corpus), "--show", "2"]) == 0
    out = capsys.readouterr().out
    assert str(wordlm_path(ckpt)) in out and "seed 1:" in out
    lm = load_wordlm(ckpt, DEFAULT_ALPHABET)
    c = load_handwriting_corpus(corpus)
    texts = [line_text(corpus / rel) for rel in sorted(c.names["train"])]
    assert lm.info == {"corpus": corpus.name, "split": "train", "lines": len(texts)}
    words = Counter(w for t in texts for w in t.split())
    assert set(lm.words) == set(words) and sum(lm.starts.values()) == len(texts)
    assert lm.lengths == dict(Counter(len(t.split()) for t in texts))
    rels = sorted(c.names["train"])
    paces = [len(load_handwriting_file(corpus / rel, rel)) / len(t) for rel, t in zip(rels, texts, strict=True)]
    assert lm.steps_per_char == pytest.approx(np.quantile(paces, 0.95), abs=1e-3)  # tiny checkpoint: stride 1


def test_the_command_line_refuses_what_it_cannot_use_with_exit_2(corpus, tmp_path, capsys):
    narrow = write_tiny_text_checkpoint(tmp_path / "narrow.safetensors")
    assert main([str(narrow), "--data", str(corpus)]) == 2
    assert "no train line has a text this model's alphabet holds" in capsys.readouterr().err
    assert main([str(tmp_path / "none.safetensors"), "--data", str(corpus)]) == 2
    assert "error:" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main([str(narrow), "--data", str(tmp_path / "nowhere")])
    assert e.value.code == 2 and "no such file or folder" in capsys.readouterr().err
