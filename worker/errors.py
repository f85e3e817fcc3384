"""Errors the job functions raise on purpose; the API maps them to HTTP statuses (docs/SERVICE.md).

No torch here: the API process imports this module in Redis mode.
"""

from __future__ import annotations


class JobInputError(ValueError):
    """Invalid input (a parameter, an upload): the API answers 422 with this message, which says what to change."""


class InputTooLargeError(JobInputError):
    """Input over a size limit of `worker.limits` (bytes, seconds of audio, pen points): the API may answer 413."""


class UnsupportedMediaError(JobInputError):
    """An upload of the wrong kind (not audio, not strokes, or the other modality than the model's): the API may
    answer 415."""


class UnknownModelError(LookupError):
    """No loaded checkpoint has that name, or none of the requested modality is loaded: the API answers 404."""

    def __str__(self) -> str:  # LookupError/KeyError-style quoting would wrap the message in quotes
        return str(self.args[0]) if self.args else ""
