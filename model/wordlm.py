"""A word language model of a corpus's text lines: the lines a text model makes up when it is told no text.

The paper's handwriting models draw lines without text, and a line of well-formed letters that spells no words is
still illegible (docs/RESULTS.md: Tesseract reads the demo hand's letters shuffled into non-words at about 37,
real lines at 63). A writer who is asked to write "something" writes words. So the service's default handwriting
line is two draws: a line of text from this model, then that line written by a text-conditioned checkpoint in a
style of its own (`worker.jobs`; `python -m model.sample CKPT --invent`).

The model is an interpolated bigram over whitespace-separated tokens (punctuation stays on its word, as written)
with absolute discounting (Ney, Essen and Kneser 1994) and Kneser-Ney's continuation distribution below it:

    p(w | v) = max(c(v, w) - D, 0) / c(v)  +  D * N1+(v, .) / c(v) * p_cont(w),   p_cont(w) = N1+(., w) / N1+(., .)

over the words of the corpus and the end of the line ("</s>"); "<s>" starts every line. A bigram alone gets a line's
length wrong (the demo corpus's lines have 2, 3 or 4 words; its bigram ends a quarter of its lines after one word),
so a line is drawn as the corpus's lines are: its number of words n from their counts in the corpus, then n words
from the bigram with the end of the line left out,

    p(w_1 .. w_n) = p_len(n) * prod_i p(w_i | w_i-1) / (1 - p(</s> | w_i-1)).

Every word it writes is a word of the corpus, in an order the corpus has or one it makes up (D > 0). Each line is
drawn from the request's seed, so a seed gives the same text and the same handwriting.

A text checkpoint NAME.safetensors may have NAME.wordlm.json beside it:

    {"format_version": 1, "corpus": "...", "split": "train", "lines": 2700, "discount": 0.75,
     "steps_per_char": 9.1, "words": ["the", ...], "starts": [[word, count], ...],
     "bigrams": [[prev, next, count], ...], "lengths": [[words, lines], ...]}

(word indices; next == len(words) is the end of the line). `steps_per_char` is the 95th percentile over the corpus's
lines of the checkpoint's steps per character, so that a request's `steps` fits the line it is given. Bounds are
checked on load (`load_wordlm`); a file that breaks them is refused with a WordLMError naming the file and the
service serves the model without it.

    python -m model.wordlm checkpoints/handwriting-text-vrnn-gmm.safetensors --data data/handwriting-demo
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint import CheckpointError, path_beside, read_beside, read_text_metadata, write_beside
from .data import DataError
from .data.corpus import SPLITS
from .data.handwriting import load_handwriting_corpus, load_handwriting_file
from .data.texts import line_text
from .text import UnsupportedCharactersError, encode, normalise

FORMAT_VERSION = 1
SUFFIX = ".wordlm.json"
DISCOUNT = 0.75
MAX_WORDS = 20_000
MAX_BIGRAMS = 200_000
MAX_WORD_CHARS = 40
MAX_WORDLM_BYTES = 8 * 1024 * 1024
MAX_LINE_WORDS = 40  # the most words a line of the corpus may have to be counted (a longer one is not a line)
MAX_LINE_CHARS = 100  # the service's bound on one line of text (worker.limits.MAX_TEXT_LINE_CHARS)
DRAWS = 64  # lines drawn for one request before the longest budget-fitting cut is taken (`WordLM.line`)
STEPS_QUANTILE = 0.95
_SEED_SALT = 0x776F72646C6D  # "wordlm": the text's random stream is not the pen's, which the same seed starts


class WordLMError(ValueError):
    """A word model file that cannot be used, or bad arguments of the command line; the message says what to do."""


@dataclass
class WordLM:
    """Counts of a corpus's lines and the distributions they give (see the module's docstring)."""

    words: list[str]
    starts: dict[int, int]  # first word -> lines starting with it
    bigrams: dict[int, dict[int, int]]  # previous word -> {next word or END: count}
    lengths: dict[int, int]  # words in a line -> lines with that many
    discount: float = DISCOUNT
    steps_per_char: float | None = None
    info: dict[str, Any] = field(default_factory=dict)  # corpus, split, lines: provenance only

    def __post_init__(self) -> None:
        n = len(self.words)
        self.end = n  # the index of "</s>"
        followers = Counter(w for nxt in self.bigrams.values() for w in nxt)  # N1+(., w), "<s>" not counted
        followers.update(self.starts.keys())  # ... and with it: every word a line starts with follows "<s>"
        cont = np.zeros(n + 1)
        for w, k in followers.items():
            cont[w] = k
        if cont.sum() <= 0:
            raise WordLMError("the word model has no counts")
        self.continuation = cont / cont.sum()
        self._cache: dict[int, np.ndarray] = {}
        self._going_on: dict[int, np.ndarray] = {}
        self._index = {w: i for i, w in enumerate(self.words)}
        if not self.lengths or sum(self.lengths.values()) <= 0:
            raise WordLMError("the word model has no line lengths")
        self._n = np.array(sorted(self.lengths))
        self._p_n = np.array([self.lengths[n] for n in self._n], dtype=float)
        self._p_n /= self._p_n.sum()

    @property
    def vocabulary(self) -> int:
        return len(self.words)

    def distribution(self, prev: int | None) -> np.ndarray:
        """p(. | prev) over the words and END (index `end`); prev None is the start of a line."""
        key = -1 if prev is None else prev
        found = self._cache.get(key)
        if found is not None:
            return found
        counts = self.starts if prev is None else self.bigrams.get(prev, {})
        total = sum(counts.values())
        if total == 0:  # a word only ever seen last: the continuation distribution alone
            p = self.continuation.copy()
        else:
            p = self.discount * len(counts) / total * self.continuation
            for w, c in counts.items():
                p[w] += max(c - self.discount, 0.0) / total
        if prev is None:
            p[self.end] = 0.0  # a line has at least one word
            p /= p.sum()
        self._cache[key] = p
        return p

    def going_on(self, prev: int | None) -> np.ndarray:
        """p(. | prev, the line goes on): `distribution` without the end, over the words."""
        key = -1 if prev is None else prev
        found = self._going_on.get(key)
        if found is None:
            p = self.distribution(prev)[: self.end]
            found = self._going_on[key] = p / p.sum()
        return found

    def log_prob(self, text: str) -> float:
        """The natural log-probability of a line (the module's formula); -inf with a word the model lacks or a
        number of words no line of the corpus has."""
        words = text.split()
        n = len(words)
        if n not in self.lengths:
            return -math.inf
        total, prev = math.log(self.lengths[n] / sum(self.lengths.values())), None
        for word in words:
            w = self._index.get(word)
            if w is None:
                return -math.inf
            total += math.log(max(self.going_on(prev)[w], 1e-300))
            prev = w
        return total

    def draw(self, rng: np.random.Generator) -> str:
        """One line: its number of words, then its words."""
        n = int(rng.choice(self._n, p=self._p_n))
        out: list[str] = []
        prev: int | None = None
        for _ in range(n):
            prev = int(rng.choice(self.end, p=self.going_on(prev)))
            out.append(self.words[prev])
        return " ".join(out)

    def max_chars(self, steps: int | None) -> int:
        """The longest line that `steps` steps write (95th percentile pace of the corpus): MAX_LINE_CHARS without a
        budget or a pace."""
        if steps is None or not self.steps_per_char:
            return MAX_LINE_CHARS
        return min(MAX_LINE_CHARS, int(steps / self.steps_per_char))

    def line(self, seed: int, steps: int | None = None) -> str | None:
        """The line of a request with this seed whose budget is `steps` pen steps (None: no budget): the first of
        DRAWS draws that fits; else the longest word-boundary cut of a draw that fits; None when no word fits."""
        rng = np.random.default_rng([int(seed) % 2**64, _SEED_SALT])
        limit = self.max_chars(steps)
        best = ""
        for _ in range(DRAWS):
            text = self.draw(rng)
            if text and len(text) <= limit:
                return text
            cut = ""
            for word in text.split():
                longer = f"{cut} {word}" if cut else word
                if len(longer) > limit:
                    break
                cut = longer
            if len(cut) > len(best):
                best = cut
        return best or None

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            **self.info,
            "discount": self.discount,
            "steps_per_char": self.steps_per_char,
            "words": self.words,
            "starts": [[w, c] for w, c in sorted(self.starts.items())],
            "bigrams": [[v, w, c] for v, nxt in sorted(self.bigrams.items()) for w, c in sorted(nxt.items())],
            "lengths": [[n, c] for n, c in sorted(self.lengths.items())],
        }


def count_lines(texts: list[str], discount: float = DISCOUNT, **info: Any) -> WordLM:
    """A WordLM of these lines (normalised; empty ones skipped), words in order of first appearance."""
    index: dict[str, int] = {}
    starts: Counter[int] = Counter()
    lengths: Counter[int] = Counter()
    bigrams: dict[int, Counter[int]] = {}
    lines = [normalise(t).split() for t in texts]
    for words in lines:
        for word in words:
            index.setdefault(word, len(index))
    end = len(index)
    kept = 0
    for words in lines:
        if not words or len(words) > MAX_LINE_WORDS:
            continue
        kept += 1
        lengths[len(words)] += 1
        ids = [index[w] for w in words]
        starts[ids[0]] += 1
        for v, w in zip(ids, [*ids[1:], end], strict=True):
            bigrams.setdefault(v, Counter())[w] += 1
    if not kept:
        raise WordLMError("no line has a word; a word model needs text")
    info.setdefault("lines", kept)
    return WordLM(
        list(index), dict(starts), {v: dict(c) for v, c in bigrams.items()}, dict(lengths), discount, info=info
    )


# The file ---------------------------------------------------------------------------------------------------------


def wordlm_path(checkpoint: str | Path) -> Path:
    """NAME.wordlm.json beside the checkpoint NAME.safetensors (or NAME.json, or NAME)."""
    return path_beside(checkpoint, SUFFIX)


def _whole(v: Any, low: int, high: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and low <= v <= high


def parse_wordlm(data: bytes | str, alphabet: str, label: str = "word model") -> WordLM:
    """A WordLM from its file's text, every bound checked: WordLMError naming `label` and what is wrong."""
    try:
        obj = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise WordLMError(f"{label}: not valid JSON ({e})") from None
    if not isinstance(obj, dict) or obj.get("format_version") != FORMAT_VERSION:
        raise WordLMError(f"{label}: not a word model file (format_version {FORMAT_VERSION} expected)")
    words, starts, bigrams = obj.get("words"), obj.get("starts"), obj.get("bigrams")
    if not (isinstance(words, list) and 1 <= len(words) <= MAX_WORDS):
        raise WordLMError(f"{label}: 'words' must be a list of 1 to {MAX_WORDS} words")
    for word in words:
        if not (isinstance(word, str) and 1 <= len(word) <= MAX_WORD_CHARS and normalise(word) == word):
            raise WordLMError(f"{label}: {str(word)[:60]!r} is not a word (1 to {MAX_WORD_CHARS} characters, no space)")
        if " " in word:
            raise WordLMError(f"{label}: {word!r} is not a word (it has a space)")
        try:
            encode(word, alphabet)
        except UnsupportedCharactersError as e:
            raise WordLMError(f"{label}: word {word!r}: {e}") from None
    if len(set(words)) != len(words):
        raise WordLMError(f"{label}: a word appears twice in 'words'")
    n = len(words)
    if not (isinstance(starts, list) and starts and all(isinstance(r, list) and len(r) == 2 for r in starts)):
        raise WordLMError(f"{label}: 'starts' must be a non-empty list of [word, count]")
    if not (isinstance(bigrams, list) and len(bigrams) <= MAX_BIGRAMS):
        raise WordLMError(f"{label}: 'bigrams' must be a list of at most {MAX_BIGRAMS} [previous, next, count]")
    first: dict[int, int] = {}
    for row in starts:
        if not (_whole(row[0], 0, n - 1) and _whole(row[1], 1, 2**40)) or row[0] in first:
            raise WordLMError(f"{label}: 'starts' row {row!r} is not [word index, count >= 1] (once per word)")
        first[row[0]] = row[1]
    pairs: dict[int, dict[int, int]] = {}
    for row in bigrams:
        ok = isinstance(row, list) and len(row) == 3 and _whole(row[0], 0, n - 1) and _whole(row[1], 0, n)
        if not (ok and _whole(row[2], 1, 2**40)) or row[1] in pairs.get(row[0], {}):
            raise WordLMError(f"{label}: 'bigrams' row {str(row)[:80]} is not [previous, next (<= {n}), count >= 1]")
        pairs.setdefault(row[0], {})[row[1]] = row[2]
    lengths = obj.get("lengths")
    if not (isinstance(lengths, list) and lengths and all(isinstance(r, list) and len(r) == 2 for r in lengths)):
        raise WordLMError(f"{label}: 'lengths' must be a non-empty list of [words in a line, lines]")
    counts: dict[int, int] = {}
    for row in lengths:
        if not (_whole(row[0], 1, MAX_LINE_WORDS) and _whole(row[1], 1, 2**40)) or row[0] in counts:
            raise WordLMError(f"{label}: 'lengths' row {row!r} is not [1 to {MAX_LINE_WORDS} words, lines >= 1]")
        counts[row[0]] = row[1]
    discount = obj.get("discount", DISCOUNT)
    if not (isinstance(discount, int | float) and not isinstance(discount, bool) and 0 < discount < 1):
        raise WordLMError(f"{label}: 'discount' must be a number between 0 and 1, got {discount!r}")
    pace = obj.get("steps_per_char")
    if pace is not None and not (isinstance(pace, int | float) and not isinstance(pace, bool) and 0 < pace <= 1000):
        raise WordLMError(f"{label}: 'steps_per_char' must be a positive number (or null), got {pace!r}")
    info = {k: obj[k] for k in ("corpus", "split", "lines") if isinstance(obj.get(k), str | int)}
    return WordLM(list(words), first, pairs, counts, float(discount), None if pace is None else float(pace), info)


def load_wordlm(checkpoint: str | Path, alphabet: str) -> WordLM | None:
    """The word model beside a text checkpoint (None when it has no NAME.wordlm.json); WordLMError naming the file
    when it is too large or not a valid word model for this alphabet."""
    path = wordlm_path(checkpoint)
    data = read_beside(path, MAX_WORDLM_BYTES, "a word model file", WordLMError)
    if data is None:
        return None
    return parse_wordlm(data, alphabet, str(path))


def write_wordlm(checkpoint: str | Path, lm: WordLM) -> Path:
    """Write NAME.wordlm.json beside the checkpoint (atomically)."""
    text = json.dumps(lm.to_json(), separators=(",", ":")) + "\n"
    if len(text.encode()) > MAX_WORDLM_BYTES:
        raise WordLMError(f"the word model takes {len(text.encode())} bytes, more than {MAX_WORDLM_BYTES}")
    return write_beside(wordlm_path(checkpoint), text)


# From a corpus ----------------------------------------------------------------------------------------------------


def corpus_wordlm(data: str | Path, checkpoint: str | Path, split: str = "train") -> WordLM:
    """The word model of a handwriting corpus's `split` (by writer, as `model.train` splits it) for a text
    checkpoint: the lines whose text its alphabet holds, and its pace (steps per character) on them."""
    if split not in SPLITS:
        raise WordLMError(f"unknown split {split!r}; pick one of {', '.join(SPLITS)}")
    try:
        meta = read_text_metadata(checkpoint)
    except CheckpointError as e:
        raise WordLMError(str(e)) from None
    alphabet = str(meta["config"]["alphabet"])
    stride = int((meta.get("dataset", {}).get("normalisation") or {}).get("point_stride") or 1)
    corpus = load_handwriting_corpus(data)
    root = Path(corpus.root)
    base = root if root.is_dir() else root.parent
    texts: list[str] = []
    paces: list[float] = []
    for rel in sorted(corpus.names[split]):
        try:
            raw = line_text(base / rel)
            text = normalise(raw or "")
            if not text:
                continue
            encode(text, alphabet)
            points = len(load_handwriting_file(base / rel, rel))
        except (DataError, UnsupportedCharactersError):
            continue
        texts.append(text)
        paces.append(math.ceil(points / stride) / len(text))
    if not texts:
        raise WordLMError(f"{data}: no {split} line has a text this model's alphabet holds; try another --split")
    lm = count_lines(texts, corpus=Path(data).name, split=split)
    lm.steps_per_char = round(float(np.quantile(paces, STEPS_QUANTILE)), 3)
    return lm


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m model.wordlm",
        description="Give a text checkpoint a word model of a corpus's lines (NAME.wordlm.json beside it): the "
        "service then writes a made-up line of that corpus's words when a handwriting request names no text and no "
        "model (POST /generate/handwriting {}), and `python -m model.sample CKPT --invent` does the same.",
        epilog="example:\n  python -m model.wordlm checkpoints/handwriting-text-vrnn-gmm.safetensors "
        "--data data/handwriting-demo\n  (the lines of the unconditional models' corpus, its train split)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", type=Path, help="a text checkpoint (NAME.safetensors with NAME.json beside it)")
    p.add_argument("--data", type=Path, required=True, help="a handwriting corpus whose lines carry their text")
    p.add_argument("--split", choices=SPLITS, default="train", help="whose lines to count (default: train)")
    p.add_argument("--show", type=int, default=5, metavar="N", help="print N lines drawn from it (default 5)")
    args = p.parse_args(argv)
    if not args.data.exists():
        p.error(f"--data {args.data}: no such file or folder; give the corpus folder (e.g. data/handwriting-demo)")
    if args.show < 0:
        p.error("--show must be 0 or more")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        lm = corpus_wordlm(args.data, args.checkpoint, args.split)
        path = write_wordlm(args.checkpoint, lm)
    except (WordLMError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"{path}: {lm.vocabulary} words from {lm.info.get('lines')} lines of {args.data} ({args.split}); "
        f"{lm.steps_per_char} steps per character (95th percentile)"
    )
    for seed in range(args.show):
        print(f"  seed {seed}: {lm.line(seed)!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
