"""Reading request bodies: JSON parameters, and the input file of /score and /analyze/latent (a multipart
upload or base64 in JSON), with the 413 / 415 / 422 answers that say what to send instead."""

from __future__ import annotations

import base64
import json
from pathlib import PurePath
from typing import Any, TypeVar

from fastapi import Depends, HTTPException, Request
from pydantic import BaseModel
from starlette.datastructures import UploadFile

from worker.contract import CONTENT_RULE, JobError, decode_base64, sniff

from .errors import validate
from .settings import Settings

M = TypeVar("M", bound=BaseModel)

FILE_FIELD = "file"
UPLOAD_KINDS = "WAV or FLAC audio, IAM-OnDB XML, JSON strokes or a .npy (T, 3) array"
_MAX_FORM_FIELDS = 20


def media_type(request: Request) -> str:
    """The request's Content-Type without parameters, lower-cased ("" when absent)."""
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def is_json(mtype: str) -> bool:
    return mtype == "application/json" or (mtype.startswith("application/") and mtype.endswith("+json"))


def _unsupported(mtype: str, wanted: str) -> HTTPException:
    return HTTPException(415, f"Content-Type {mtype!r} is not accepted here: send {wanted}")


async def read_json(request: Request) -> Any:
    """The body as JSON (an empty body is {}: every parameter takes its default). A missing Content-Type is
    read as JSON; any other non-JSON type is a 415."""
    mtype = media_type(request)
    if mtype and not is_json(mtype):
        raise _unsupported(mtype, "a JSON object with Content-Type: application/json")
    body = await request.body()
    if not body.strip():
        return {}
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        why = str(e) if isinstance(e, ValueError) else "nested too deeply"
        raise HTTPException(
            422, f'invalid request: the body is not valid JSON ({why}); send a JSON object such as {{"seed": 1}}'
        ) from None


def json_body(model: type[M]) -> Any:
    """A dependency giving the JSON body validated as `model` (declare it after RequireApiKey, so that an
    unauthenticated request is refused before its body is read)."""

    async def parse(request: Request) -> M:
        return validate(model, await read_json(request))

    return Depends(parse)


def json_openapi(model: type[BaseModel], required: bool = False) -> dict[str, Any]:
    """openapi_extra documenting a JSON request body read by `json_body`."""
    return {
        "requestBody": {
            "required": required,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


UPLOAD_MEDIA_TYPES = (
    "audio/wav, audio/x-wav, audio/flac, audio/ogg, audio/aiff, application/xml, text/xml, application/json, "
    "application/octet-stream"
)
_EXAMPLE_STROKES = b"[[[0, 0], [5, 3], [10, 8], [14, 9]], [[20, 0], [25, 5], [27, 9]]]"


def data_openapi(model: type[BaseModel]) -> dict[str, Any]:
    """openapi_extra documenting the two ways to send an input file (see `read_data`). The size limits depend on
    the app's settings: `document_limits` adds them when the document is built."""
    schema = model.model_json_schema()
    schema["properties"]["data_b64"]["description"] += " " + CONTENT_RULE
    form_props = {k: v for k, v in schema["properties"].items() if k not in ("data_b64", "filename")}
    form_props[FILE_FIELD] = {
        "type": "string",
        "format": "binary",
        "contentMediaType": "application/octet-stream",
        "description": f"The input: {UPLOAD_KINDS}. {CONTENT_RULE} Its file name's suffix picks the parser.",
    }
    form = {
        "type": "object",
        "properties": form_props,
        "required": [FILE_FIELD],
        "additionalProperties": False,
    }
    example = {"data_b64": encode_b64(_EXAMPLE_STROKES), "filename": "line.json"}
    return {
        "requestBody": {
            "required": True,
            "description": "multipart/form-data with the input in the `file` field (one file) and the other "
            "parameters as form fields, or a JSON object with the input base64-encoded in `data_b64` "
            "(application/json or any application/*+json; a body without Content-Type is read as JSON). Any "
            "other Content-Type: 415.",
            "content": {
                "multipart/form-data": {
                    "schema": form,
                    "encoding": {FILE_FIELD: {"contentType": UPLOAD_MEDIA_TYPES}},
                },
                "application/json": {"schema": schema, "example": example},
            },
        }
    }


def b64_length(n: int) -> int:
    """Characters of the padded base64 of `n` bytes: the longest data_b64 that can decode to at most `n` bytes."""
    return (n + 2) // 3 * 4


def _string_branch(schema: dict[str, Any]) -> dict[str, Any]:
    """The string schema of an optional field (anyOf [string, null]), or `schema` itself."""
    for branch in schema.get("anyOf", ()):
        if branch.get("type") == "string":
            return branch
    return schema


def document_limits(spec: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The OpenAPI document with this app's size limits filled in (in place): maxLength of every uploaded file
    (multipart `file`: bytes) and of every base64 input (`data_b64`, `prime`: characters, `format: byte`), the
    request-body limit, and the 413 answers' descriptions."""
    upload, body = settings.max_upload_bytes, settings.max_body_bytes
    sizes = (
        f"An input file may have at most {upload} bytes (MAX_UPLOAD_BYTES: decoded, for base64), the request body "
        f"at most {body} bytes (MAX_BODY_BYTES)."
    )
    for operations in spec.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict) or "requestBody" not in operation:
                continue
            request_body = operation["requestBody"]
            documented = False
            for media, content in request_body.get("content", {}).items():
                props = content.get("schema", {}).get("properties", {})
                if media == "multipart/form-data" and FILE_FIELD in props:
                    props[FILE_FIELD]["maxLength"] = upload
                    documented = True
                for key in ("data_b64", "prime"):
                    if key in props:
                        field = _string_branch(props[key])
                        field.update(format="byte", contentEncoding="base64", maxLength=b64_length(upload))
                        documented = True
            if documented:
                request_body["description"] = f"{request_body.get('description', '')} {sizes}".strip()
                too_large = operation.get("responses", {}).get("413")
                if too_large is not None:
                    too_large["description"] = f"Body or input file too large. {sizes}"
    return spec


def decode_b64(text: str, field: str, settings: Settings) -> bytes:
    """worker.contract.decode_base64 under this app's MAX_UPLOAD_BYTES; 422 when invalid, 413 when too large."""
    try:
        return decode_base64(text, field, settings.max_upload_bytes)
    except JobError as e:
        raise HTTPException(e.status, f"invalid request: {e}" if e.status == 422 else str(e)) from None


def encode_b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def too_large(what: str, settings: Settings) -> str:
    return f"{what} is larger than the {settings.max_upload_bytes} bytes allowed (MAX_UPLOAD_BYTES); send a shorter one"


def check_kind(data: bytes, what: str) -> None:
    """415 unless the input is what worker.contract.sniff accepts (the worker applies the same rule)."""
    if sniff(data) is None:
        raise HTTPException(415, f"{what} is not {UPLOAD_KINDS}; send one of those")


async def read_data(request: Request, model: type[M], settings: Settings) -> tuple[M, bytes]:
    """/score and /analyze/latent's input: multipart/form-data with the file in `file` and the other parameters
    as form fields, or a JSON object with `data_b64` -> (validated parameters, the file's bytes)."""
    mtype = media_type(request)
    if mtype == "multipart/form-data":
        fields, data = await _read_form(request, settings)
        params = validate(model, fields)
    elif not mtype or is_json(mtype):
        params = validate(model, await read_json(request))
        data = decode_b64(params.data_b64, "data_b64", settings)
        # The worker gets plain base64 (no data: URL prefix, no line breaks).
        params = params.model_copy(update={"data_b64": encode_b64(data)})
    else:
        raise _unsupported(mtype, f"multipart/form-data with the input in a '{FILE_FIELD}' field, or application/json")
    check_kind(data, "the input")
    return params, data


async def _read_form(request: Request, settings: Settings) -> tuple[dict[str, Any], bytes]:
    try:
        form = await request.form(max_files=1, max_fields=_MAX_FORM_FIELDS)
    except HTTPException:
        raise
    except Exception as e:  # starlette answers malformed multipart with a 400; bad input is a 422 here
        detail = getattr(e, "detail", None) or str(e) or type(e).__name__
        raise HTTPException(422, f"invalid request: the multipart body could not be read ({detail})") from None
    try:
        fields: dict[str, Any] = {}
        upload = None
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                if key != FILE_FIELD:
                    raise HTTPException(422, f"invalid request: send the input file in a field named '{FILE_FIELD}'")
                upload = value
            elif value != "":  # an empty HTML form input means "not given"
                fields[key] = value
        if upload is None:
            if "data_b64" in fields:
                data = decode_b64(fields["data_b64"], "data_b64", settings)
                return {**fields, "data_b64": encode_b64(data)}, data
            raise HTTPException(422, f"invalid request: no file; send the input in a multipart field '{FILE_FIELD}'")
        data = await upload.read(settings.max_upload_bytes + 1)
        if len(data) > settings.max_upload_bytes:
            raise HTTPException(413, too_large("the uploaded file", settings))
        fields["data_b64"] = encode_b64(data)
        if upload.filename and "filename" not in fields:
            fields["filename"] = PurePath(upload.filename.replace("\\", "/")).name[-255:] or None
        return fields, data
    finally:
        await form.close()
