#!/bin/sh
# Entry point of the vrnn-service image.
#
#   api [ARGS...]     the HTTP service: `python -m app` (uvicorn on $HOST:$PORT, 0.0.0.0:8000 in the image);
#                     with REDIS_URL it queues jobs on Redis, without it runs them in-process (embedded mode)
#   worker [ARGS...]  an RQ worker: `python -m worker` (needs REDIS_URL); loads every checkpoint of
#                     $CHECKPOINT_DIR once and uses the GPU when PyTorch sees one
#   anything else     run as a command (e.g. `python -m model.sample ...`, `sh`)
#
# `exec` replaces this shell, so the Python process gets SIGTERM from `docker stop` directly: uvicorn
# drains its connections and the worker finishes the job it is running before it exits (warm shutdown).
set -eu

role="${1:-api}"
[ "$#" -gt 0 ] && shift

case "$role" in
    api)
        exec python -m app "$@"
        ;;
    worker)
        if [ -z "${REDIS_URL:-}" ]; then
            echo "vrnn-entrypoint: the worker needs REDIS_URL (e.g. redis://redis:6379/0)" >&2
            exit 64
        fi
        exec python -m worker "$@"
        ;;
    *)
        exec "$role" "$@"
        ;;
esac
