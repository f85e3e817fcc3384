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


# What the grammar never writes, for corpora that must cover a text model's whole alphabet
# (model.text.DEFAULT_ALPHABET: every letter in both cases, digits, . , ' ! ? - : ; " ( ) & /).
RARE_WORDS = [
    "jazz", "jolly", "jam", "judge", "jump", "zebra", "zero", "quiz", "prize", "frozen", "lazy", "dozen", "zone",
    "quite", "queen", "oxygen", "taxi", "wax", "fix", "boxes", "kayak", "vivid", "awkward", "jacket", "puzzle",
]  # fmt: skip
RARE_NAMES = [
    "Quinn", "Xavier", "Zoe", "Yusuf", "Ursula", "Kim", "Olga", "Ezra", "Walter", "Ruth", "Gil", "Xenia", "Zack",
    "Yvonne", "Quentin", "Uma", "Karl", "Luz", "Jules", "Bea", "Otto", "Ivy", "Rex", "Mae", "Dov", "Pia", "Tia",
]  # fmt: skip
CONTRACTIONS = ["it's", "don't", "we'll", "isn't", "you're", "I'm", "they've", "can't", "o'clock", "Zoe's"]


def _rare_token(r: random.Random) -> str:
    """One token the grammar lacks: a number, a time, a date, a fraction, a contraction, a quoted or bracketed or
    hyphenated word, an ampersand, a shouted name, a rare word."""
    word = r.choice(RARE_WORDS)
    kind = r.randrange(12)
    if kind == 0:
        return str(r.randint(0, 999))
    if kind == 1:
        return f"{r.randint(1, 12)}:{r.randint(0, 59):02d}"
    if kind == 2:
        return f"{r.randint(1, 31)}/{r.randint(1, 12)}/{r.randint(1990, 2030)}"
    if kind == 3:
        return r.choice(CONTRACTIONS)
    if kind == 4:
        return f'"{word}"'
    if kind == 5:
        return f"({word})"
    if kind == 6:
        return f"{word}-{r.choice(RARE_WORDS)}"
    if kind == 7:
        return f"{r.choice(RARE_NAMES)} & {r.choice(RARE_NAMES)}"
    if kind == 8:
        return r.choice(RARE_NAMES).upper()
    if kind == 9:
        return f"{word}:" if r.random() < 0.5 else f"{word};"
    return r.choice(RARE_NAMES) if kind == 10 else word


def alphabet_line(r: random.Random) -> str:
    """`text_line` with one or two tokens of what the grammar never writes put in at random places, so that a
    corpus of a few thousand lines holds every character of model.text.DEFAULT_ALPHABET many times."""
    words = text_line(r).split()
    for _ in range(r.randint(1, 2)):
        words.insert(r.randint(0, len(words)), _rare_token(r))
    return " ".join(words)
