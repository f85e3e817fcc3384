"""OpenAPI fragments the routes share: binary bodies, result headers, error answers."""

from __future__ import annotations

from typing import Any

from ..schemas import ErrorBody, JobState

_ERRORS = {
    401: "X-API-Key missing or wrong (only when the server sets API_KEYS).",
    404: "Unknown model, or unknown or expired job.",
    413: "Body or input file too large.",
    415: "Wrong Content-Type, or an input that is neither audio nor strokes.",
    422: "Invalid input; the message says what to change.",
    429: "This client has MAX_JOBS_PER_CLIENT jobs queued or running; retry after Retry-After seconds.",
    503: "Queue full or no worker running; retry after Retry-After seconds.",
    504: "Redis mode: the job ran longer than JOB_TIMEOUT_S and was stopped.",
}

RESULT_HEADERS = {
    "X-Model": {"description": "Checkpoint that produced the result.", "schema": {"type": "string"}},
    "X-Job-Id": {"description": "The job's id (GET /jobs/{id}).", "schema": {"type": "string"}},
}
SAMPLE_HEADERS = {
    **RESULT_HEADERS,
    "X-Seed": {"description": "The seed used: send it again for the same bytes.", "schema": {"type": "string"}},
    "X-Output": {"description": "`sample` or `mean` (the decoder mean).", "schema": {"type": "string"}},
}
HANDWRITING_HEADERS = {
    **SAMPLE_HEADERS,
    "X-Text": {
        "description": "Without `text`: the line of text the model made up and wrote (model.wordlm), when it did.",
        "schema": {"type": "string"},
    },
}
ACCEPTED = {
    "model": JobState,
    "description": "`Prefer: respond-async`, or the job outlasted SYNC_WAIT_S: poll `Location` (/jobs/{id}); "
    "the result will be at /jobs/{id}/result.",
    "headers": {"Location": {"description": "/jobs/{id}", "schema": {"type": "string"}}},
}


_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    answers: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        answers[code] = {"model": ErrorBody, "description": _ERRORS[code]}
        if code in (429, 503):
            answers[code]["headers"] = _RETRY_AFTER
    return answers


def binary(media_types: dict[str, str], headers: dict[str, Any]) -> dict[str, Any]:
    """A 200 response whose body is one of `media_types` ({type: description})."""
    content: dict[str, Any] = {}
    for mtype in media_types:
        is_json = mtype == "application/json"
        content[mtype] = {"schema": {"type": "object"} if is_json else {"type": "string", "format": "binary"}}
    description = "; ".join(f"{k}: {v}" for k, v in media_types.items())
    return {"description": description, "content": content, "headers": headers}


JOB_ERRORS = errors(401, 404, 413, 415, 422, 429, 503, 504)
