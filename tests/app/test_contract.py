"""worker/contract.py is the one statement of the seam: the API's request models map onto its parameters, both
sides use its errors, statuses and upload rule, and a failed job's error survives the trip through RQ's text."""

from __future__ import annotations

import traceback

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

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


# One set of parameter models: the API validates bodies with them, the worker its jobs' parameters ---------------

VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "svg", "json", "png", "navy", "speech-vrnn-gmm", "a b", "AAAA", "2", "x" * 300]),
)
API_MODELS = {
    "generate_speech": (schemas.SpeechRequest, lambda m: m.job_params()),
    "generate_handwriting": (schemas.HandwritingRequest, lambda m: m.job_params("svg")),
    "score": (schemas.ScoreRequest, lambda m: m.model_dump()),
    "analyze_latent": (schemas.AnalyzeRequest, lambda m: {**m.model_dump(), "format": "json"}),
}


@pytest.mark.parametrize("kind", sorted(API_MODELS))
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_what_the_api_accepts_the_worker_accepts_and_both_refuse_the_same_values(kind, data) -> None:
    """A body the API accepts becomes parameters the worker accepts as they are; a JSON-typed value the worker
    refuses, the API refuses too (the API alone also takes numbers as strings, as in multipart forms)."""
    api, to_params = API_MODELS[kind]
    public = {(f.alias or n): n for n, f in api.model_fields.items()}
    body = data.draw(st.dictionaries(st.sampled_from([*public, "unknown"]), VALUES, max_size=4))
    try:
        accepted = api.model_validate(body, by_alias=True, by_name=False)
    except ValidationError as e:
        assert contract.describe(e.errors(include_url=False), api).startswith("'")  # names the field
        accepted = None
    params = {public.get(k, k): v for k, v in body.items()}
    try:
        parsed = contract.parse_params(kind, params)
    except contract.JobInputError as e:
        assert str(e).startswith("'"), e
        parsed = None
    if accepted is not None:
        assert contract.parse_params(kind, to_params(accepted)) is not None
    if parsed is not None:
        assert accepted is not None, (body, params)
        assert to_params(accepted) == parsed.model_dump()


def test_the_worker_takes_parameter_names_and_the_api_its_public_names() -> None:
    with pytest.raises(contract.JobInputError, match="'prime' is not a parameter"):
        contract.parse_params("generate_speech", {"prime": "AAAA"})
    assert contract.parse_params("generate_speech", {"prime_b64": "AAAA"}).prime_b64 == "AAAA"
    with pytest.raises(ValidationError):
        schemas.SpeechRequest.model_validate({"prime_b64": "AAAA"}, by_alias=True, by_name=False)


@pytest.mark.parametrize(
    ("kind", "params", "message"),
    [
        ("generate_speech", {"duration_s": 0}, "'duration_s' must be a number from 0.05 to 20, got 0; pick a value"),
        ("generate_speech", {"temperature": 0}, "'temperature' must be a number above 0 and at most 5, got 0"),
        ("generate_speech", {"duration_s": "2"}, "'duration_s' must be a number from 0.05 to 20, got '2'"),
        ("generate_speech", {"seed": 1.5}, "'seed' must be a whole number from 0 to 2**63 - 1 (or null"),
        ("generate_speech", {"mean": 1}, "'mean' must be true or false, got 1"),
        ("generate_speech", {"duration_s": float("inf")}, "'duration_s' must be a finite number, not inf; send a"),
        ("generate_handwriting", {"format": "pdf"}, "'format' must be one of 'svg', 'json', got 'pdf'"),
        ("generate_handwriting", {"model": "x" * 129}, "'model' must have at most 128 characters, got 129"),
        ("score", {}, "'data_b64' is required"),
        ("score", {"data_b64": ""}, "'data_b64' is empty; send a base64 string"),
        ("list_models", {"x": 1}, "'x' is not a parameter here; remove or correct it (the parameters are: none)"),
        ("list_models", [1], "the parameters must be a JSON object, not [1]"),
    ],
)
def test_each_refusal_says_what_to_send(kind, params, message) -> None:
    with pytest.raises(contract.JobInputError) as info:
        contract.parse_params(kind, params)
    assert str(info.value).startswith(message), str(info.value)
