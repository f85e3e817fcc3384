"""`python -m app [--host H] [--port P]`: serve the API with uvicorn (defaults: the HOST and PORT settings).

Every other setting comes from the environment (app/settings.py). Without REDIS_URL the server runs the
jobs in-process on the checkpoints in CHECKPOINT_DIR: nothing else needs to run."""

from __future__ import annotations

import argparse
import os
import sys

import uvicorn
from pydantic import ValidationError

from .settings import get_settings


def main(argv: list[str] | None = None) -> None:
    try:
        settings = get_settings()
    except ValidationError as e:  # a bad environment variable: say which, not a traceback
        sys.exit(f"python -m app: invalid setting in the environment:\n{e}")
    p = argparse.ArgumentParser(prog="python -m app", description=__doc__.split("\n\n", 1)[1])
    p.add_argument("--host", default=settings.host, help="address to bind (default: HOST, %(default)s)")
    p.add_argument("--port", type=int, default=settings.port, help="port (default: PORT, %(default)s)")
    p.add_argument("--log-level", default=settings.log_level, help="uvicorn's log level (default: %(default)s)")
    args = p.parse_args(argv)
    # app.main builds its app from the environment: pass the command line's choices on the same way.
    os.environ.update(HOST=args.host, PORT=str(args.port))
    # One process: embedded mode keeps the models and the job store in memory. Scale out with Redis workers.
    uvicorn.run("app.main:app", host=args.host, port=args.port, log_level=args.log_level.lower())


if __name__ == "__main__":
    main()
