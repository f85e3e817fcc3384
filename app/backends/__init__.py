"""Job backends: the one seam between the routes and worker/ (see base.py for the interface).

`make_backend(settings)` picks RedisBackend when REDIS_URL is set, else EmbeddedBackend. Each is imported
only when chosen, so the API process in Redis mode never imports torch.
"""

from __future__ import annotations

from .base import (
    Backend,
    BackendError,
    ClientLimitError,
    JobFailedError,
    JobObserver,
    JobPendingError,
    QueueFullError,
    UnavailableError,
    UnknownJobError,
)

__all__ = [
    "Backend",
    "BackendError",
    "ClientLimitError",
    "JobFailedError",
    "JobObserver",
    "JobPendingError",
    "QueueFullError",
    "UnavailableError",
    "UnknownJobError",
    "make_backend",
]


def make_backend(settings, observer: JobObserver | None = None) -> Backend:
    if settings.embedded:
        from .embedded import EmbeddedBackend

        return EmbeddedBackend(settings, observer)
    from .redis import RedisBackend

    return RedisBackend(settings, observer)
