"""Text for text-conditioned handwriting: an alphabet, encoding a line to indices, and clear errors.

A model that writes text knows a fixed alphabet (stored in its checkpoint); a character outside it is refused
with an error that names every such character, so a client knows what to change. Case is kept (a model trained
on both cases writes both); white space is folded to single spaces and trimmed, since a line's layout comes from
the model, not from the string.
"""

from __future__ import annotations

import string
import unicodedata

import torch
from torch import Tensor

# What the demo corpus and IAM-OnDB's transcriptions use: letters, digits, space and common punctuation.
DEFAULT_ALPHABET = " " + string.ascii_lowercase + string.ascii_uppercase + string.digits + ".,'!?-:;\"()&/"
MAX_TEXT_CHARS = 200


class UnsupportedCharactersError(ValueError):
    """A text holds characters the model's alphabet lacks; `.characters` lists them (in order of appearance)."""

    def __init__(self, characters: list[str], alphabet: str):
        self.characters = characters
        shown = ", ".join(_show(c) for c in characters)
        super().__init__(
            f"the text has characters this model cannot write: {shown} (it writes {_describe(alphabet)}); "
            "remove or replace them"
        )


def _show(c: str) -> str:
    name = unicodedata.name(c, None)
    return f"{c!r} ({name.lower()})" if name and not c.isalnum() else repr(c)


def _describe(alphabet: str) -> str:
    groups = [
        ("a-z", string.ascii_lowercase),
        ("A-Z", string.ascii_uppercase),
        ("0-9", string.digits),
    ]
    parts, rest = [], set(alphabet)
    for label, chars in groups:
        if set(chars) <= rest:
            parts.append(label)
            rest -= set(chars)
    if " " in rest:
        parts.append("space")
        rest.discard(" ")
    if rest:
        parts.append("".join(sorted(rest)))
    return ", ".join(parts)


def normalise(text: str) -> str:
    """White space folded to single spaces and trimmed; Unicode compatibility forms (NFKC) composed."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


def encode(text: str, alphabet: str, max_chars: int = MAX_TEXT_CHARS) -> Tensor:
    """`text` (normalised) -> (U,) int64 indices into `alphabet`. Raises UnsupportedCharactersError naming every
    character outside the alphabet, and ValueError for an empty or too long text."""
    line = normalise(text)
    if not line:
        raise ValueError("the text is empty: give at least one character to write")
    if len(line) > max_chars:
        raise ValueError(f"the text has {len(line)} characters; at most {max_chars} fit in one line")
    index = {c: i for i, c in enumerate(alphabet)}
    missing = list(dict.fromkeys(c for c in line if c not in index))
    if missing:
        raise UnsupportedCharactersError(missing, alphabet)
    return torch.tensor([index[c] for c in line], dtype=torch.long)


class LineError(ValueError):
    """An empty or too long line among `lines` lines (`check_lines`): `line` is its number (1-based); the message is
    `encode`'s."""

    def __init__(self, message: str, line: int, lines: int):
        super().__init__(message)
        self.line, self.lines = line, lines


def check_lines(lines: list[str], alphabet: str) -> None:
    """Every line `encode`s: UnsupportedCharactersError naming every character outside `alphabet` in all the lines at
    once, or LineError (a ValueError) for the first empty or too long line."""
    missing: list[str] = []
    for i, line in enumerate(lines, 1):
        try:
            encode(line, alphabet)
        except UnsupportedCharactersError as e:
            missing += e.characters
        except ValueError as e:
            raise LineError(str(e), i, len(lines)) from None
    if missing:
        raise UnsupportedCharactersError(list(dict.fromkeys(missing)), alphabet)


def decode(indices: Tensor, alphabet: str) -> str:
    return "".join(alphabet[i] for i in indices.tolist())


def one_hot_batch(lines: list[Tensor], alphabet_size: int) -> tuple[Tensor, Tensor]:
    """Encoded lines -> one-hot (B, U_max, A) float32 and a mask (B, U_max), padding zero."""
    if not lines:
        raise ValueError("no lines")
    u = max(len(t) for t in lines)
    onehot = torch.zeros(len(lines), u, alphabet_size)
    mask = torch.zeros(len(lines), u, dtype=torch.bool)
    for b, t in enumerate(lines):
        onehot[b, torch.arange(len(t)), t] = 1.0
        mask[b, : len(t)] = True
    return onehot, mask
