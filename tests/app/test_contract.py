"""worker/contract.py is the one statement of the seam: the API's request models map onto its parameters, both
sides use its errors, statuses and upload rule, and a failed job's error survives the trip through RQ's text."""

from __future__ import annotations

import traceback

import pytest

from app import schemas
from worker import contract


def test_the_apis_requests_become_exactly_the_contracts_parameters() -> None:
    data = {"data_b64": "AAAA"}
    assert set(schemas.SpeechRequest().job_params()) == set(contract.PARAMS["generate_speech"])
    assert set(schemas.HandwritingRequest().job_params("svg")) == set(contract.PARAMS["generate_handwriting"])
    assert set(schemas.ScoreRequest(**data).model_dump()) == set(contract.PARAMS["score"])
    assert set(schemas.AnalyzeRequest(**data).model_dump()) | {"format"} == set(contract.PARAMS["analyze_latent"])
    assert tuple(contract.PARAMS) == contract.KINDS


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (contract.JobInputError("bad"), 422),
        (contract.InputTooLargeError("big"), 413),
        (contract.UnsupportedMediaError("odd"), 415),
        (contract.UnknownModelError("who"), 404),
        (RuntimeError("secret"), 500),
    ],
)
def test_an_error_keeps_its_status_recorded_or_parsed_from_a_traceback(error, status) -> None:
    info = contract.error_info(error)
    assert info["status"] == status and info["type"] == type(error).__name__
    try:
        raise error
    except Exception:
        text = traceback.format_exc()
    assert contract.parse_error(text) == info
    shown = contract.public(info)
    assert shown == ((status, str(error)) if status < 500 else (500, contract.INTERNAL_ERROR_MESSAGE))


def test_one_upload_rule() -> None:
    assert contract.sniff(b"RIFF\x00\x00\x00\x00WAVEfmt ") == "speech"
    assert contract.sniff(b"\xef\xbb\xbf  [[[0, 0]]]") == "handwriting"
    for other in (b".snd\x00\x00\x00\x18", b"NIST_1A\n   1024\n", b"RIFF\x00\x00\x00\x00AVI ", b"\x89PNG"):
        assert contract.sniff(other) is None, other  # AU and NIST SPHERE: 415 at the API, refused by the worker too
