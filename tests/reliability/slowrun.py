"""`python tests/reliability/slowrun.py worker|app [args]`: the real `python -m worker` or `python -m app`, with
every job of worker.jobs.Jobs (the RQ entry points and embedded mode both run them) slowed down by
RELIABILITY_JOB_DELAY_S seconds (so that a test can kill or stop a process while a job runs) and each result marked
with the process that ran it (header X-Worker-Pid).

Only the standard library at the top, and nothing of the service changes but the job functions' timing."""

from __future__ import annotations

import functools
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SLOWED = ("generate_speech", "generate_handwriting", "score", "analyze_latent")


def patch_jobs(delay: float) -> None:
    from worker import jobs

    for name in SLOWED:
        original = getattr(jobs.Jobs, name)

        @functools.wraps(original)
        def slowed(self, params, _original=original):
            end = time.monotonic() + delay
            while time.monotonic() < end:
                time.sleep(0.02)
            result = _original(self, params)
            result["headers"] = {**result.get("headers", {}), "X-Worker-Pid": str(os.getpid())}
            return result

        setattr(jobs.Jobs, name, slowed)


def main() -> None:
    which, args = sys.argv[1], sys.argv[2:]
    sys.path.insert(0, str(ROOT))
    patch_jobs(float(os.environ.get("RELIABILITY_JOB_DELAY_S", "0")))
    sys.argv = [f"python -m {which}", *args]
    if which == "worker":
        from worker.__main__ import main as worker_main

        sys.exit(worker_main())
    from app.__main__ import main as app_main

    app_main()


if __name__ == "__main__":
    main()
