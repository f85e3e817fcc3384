"""Varied English text from a seeded grammar: what the demo corpora's speaker reads and writers write."""

from __future__ import annotations

import random

NAMES = [
    "Anna",
    "Ben",
    "Clara",
    "David",
    "Emma",
    "Frank",
    "Grace",
    "Henry",
    "Iris",
    "Jack",
    "Laura",
    "Martin",
    "Nora",
    "Oscar",
    "Paula",
    "Simon",
    "Tom",
    "Vera",
]
ADJECTIVES = [
    "old",
    "young",
    "small",
    "large",
    "quiet",
    "noisy",
    "bright",
    "dark",
    "warm",
    "cold",
    "heavy",
    "light",
    "quick",
    "slow",
    "gentle",
    "careful",
    "strange",
    "simple",
    "clever",
    "honest",
    "lucky",
    "busy",
    "empty",
    "famous",
    "hidden",
    "yellow",
    "green",
    "blue",
    "silver",
    "wooden",
]
NOUNS = [
    "garden",
    "river",
    "window",
    "teacher",
    "doctor",
    "letter",
    "basket",
    "mountain",
    "village",
    "kitchen",
    "bridge",
    "market",
    "painter",
    "farmer",
    "engine",
    "island",
    "forest",
    "candle",
    "ladder",
    "pocket",
    "station",
    "harbour",
    "library",
    "valley",
    "machine",
    "blanket",
    "bottle",
    "castle",
    "garage",
    "meadow",
    "orchard",
    "pencil",
]
PLURALS = {n: (n[:-1] + "ies" if n.endswith("y") and n[-2] not in "aeiou" else n + "s") for n in NOUNS}
VERBS_PAST = [
    "found",
    "painted",
    "opened",
    "carried",
    "visited",
    "watched",
    "cleaned",
    "repaired",
    "described",
    "noticed",
    "followed",
    "borrowed",
    "counted",
    "moved",
    "covered",
    "crossed",
    "reached",
    "lifted",
    "measured",
    "ordered",
]
VERBS_BASE = [
    "find",
    "paint",
    "open",
    "carry",
    "visit",
    "watch",
    "clean",
    "repair",
    "describe",
    "notice",
    "follow",
    "borrow",
    "count",
    "move",
    "cover",
    "cross",
    "reach",
    "lift",
    "measure",
    "order",
]
ADVERBS = ["slowly", "quickly", "carefully", "quietly", "happily", "suddenly", "easily", "gladly", "rarely", "often"]
PREPOSITIONS = ["near", "behind", "beside", "across", "under", "over", "inside", "beyond", "along", "around"]
TIMES = [
    "yesterday,",
    "last winter,",
    "this morning,",
    "after lunch,",
    "on Monday,",
    "every summer,",
    "before dawn,",
    "at noon,",
    "later that day,",
]
NUMBERS = ["two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "twelve", "twenty"]
CONJUNCTIONS = ["and", "but", "so", "while"]


def _np(r: random.Random) -> str:
    """A noun phrase: the/a/this, an optional adjective, a noun."""
    det = r.choice(["the", "the", "a", "this", "that", "our", "her", "his"])
    adj = r.choice(ADJECTIVES) + " " if r.random() < 0.5 else ""
    words = f"{det} {adj}{r.choice(NOUNS)}"
    if det == "a" and words[2] in "aeiou":
        words = "an" + words[1:]
    return words


def _pp(r: random.Random) -> str:
    return f"{r.choice(PREPOSITIONS)} {_np(r)}"


def _clause(r: random.Random) -> str:
    subject = r.choice(NAMES) if r.random() < 0.35 else _np(r)
    adv = f" {r.choice(ADVERBS)}" if r.random() < 0.3 else ""
    pp = f" {_pp(r)}" if r.random() < 0.5 else ""
    return f"{subject}{adv} {r.choice(VERBS_PAST)} {_np(r)}{pp}"


def sentence(r: random.Random) -> str:
    """One sentence of about 5 to 20 words, punctuated."""
    kind = r.random()
    if kind < 0.45:
        time = r.choice(TIMES) + " " if r.random() < 0.3 else ""
        s = f"{time}{_clause(r)}."
    elif kind < 0.6:
        s = f"{_clause(r)}, {r.choice(CONJUNCTIONS)} {_clause(r)}."
    elif kind < 0.75:
        who = r.choice(NAMES) if r.random() < 0.5 else _np(r)
        s = f"did {who} {r.choice(VERBS_BASE)} {_np(r)} {_pp(r)}?"
    elif kind < 0.87:
        s = f"please {r.choice(VERBS_BASE)} {_np(r)} {r.choice(ADVERBS)}."
    else:
        s = f"there were {r.choice(NUMBERS)} {r.choice(ADJECTIVES)} {PLURALS[r.choice(NOUNS)]} {_pp(r)}."
    return s[0].upper() + s[1:]


def sentences(n: int, seed: int) -> list[str]:
    """n sentences, the same for the same seed."""
    r = random.Random(f"sentences-{seed}")
    return [sentence(r) for _ in range(n)]


def text_line(r: random.Random, min_words: int = 2, max_words: int = 4) -> str:
    """A handwritten line of a few words: a stretch of a sentence, sometimes capitalised or punctuated."""
    words = sentence(r).rstrip(".?").replace(",", "").split()
    k = r.randint(min_words, max_words)
    start = r.randint(0, max(0, len(words) - k))
    line = words[start : start + k]
    line = [w.lower() if w not in NAMES else w for w in line]
    if r.random() < 0.3:
        line[0] = line[0][0].upper() + line[0][1:]
    if r.random() < 0.2:
        line[-1] += r.choice([".", ",", "!", "?"])
    return " ".join(line)
