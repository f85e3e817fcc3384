"""The contract at the seam between app/ and worker/, written once: the job kinds and their parameters, the errors a
job raises on purpose with the HTTP status each answers, the one parser of a failed job's error text, what an upload
is by its first bytes, and a checkpoint's public description (GET /models).

Plain Python and pydantic, no torch: the API process imports it in Redis mode. docs/ARCHITECTURE.md shows where it sits.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

from annotated_types import Ge, Gt, Le
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic.fields import FieldInfo

from . import limits

# A job is a call of the function of worker.jobs named by its kind on a JSON-safe dict of the fields of its parameter
# model (PARAM_MODELS, below: the API validates its request bodies with the same models).
DEFAULT_DURATION_S = 2.0  # seconds of speech; the paper's Figure 3 samples are 2.0 s long
DEFAULT_STEPS = 700  # pen steps of handwriting: about one IAM-OnDB line
TEXT_BIAS = 2.0  # the bias of a request with `text` that gives none (model.defaults.TEXT_BIAS: a test keeps them equal)
HANDWRITING_BIAS = 1.0  # the bias of an unconditional handwriting request that gives none (model.defaults'; tested)
DEFAULT_NUM_SAMPLES = 40  # the paper's K for the IS estimate
DEFAULT_COLOR = "#1a1a1a"
DEFAULT_STROKE_WIDTH = 2.0


# Errors ------------------------------------------------------------------------------------------------------------


class JobError(Exception):
    """An error a job raises on purpose; `status` is the HTTP status of the synchronous call."""

    status = 500


class JobInputError(JobError, ValueError):
    """Invalid input (a parameter, an upload): 422 with this message, which says what to change."""

    status = 422


class InputTooLargeError(JobInputError):
    """Input over a size limit of `worker.limits` (bytes, seconds of audio, pen points): 413."""

    status = 413


class UnsupportedMediaError(JobInputError):
    """An upload of the wrong kind (not audio, not strokes, or the other modality than the model's): 415."""

    status = 415


class UnknownModelError(JobError, LookupError):
    """No loaded checkpoint has that name, or none of the requested modality is loaded: 404."""

    status = 404

    def __str__(self) -> str:  # LookupError/KeyError-style quoting would wrap the message in quotes
        return str(self.args[0]) if self.args else ""


POISON_ERROR = "PoisonJobError"
# Each error by class name (as a failed job's record or traceback names it) -> HTTP status; any other: 500.
ERROR_STATUS = {
    **{c.__name__: c.status for c in (JobInputError, InputTooLargeError, UnsupportedMediaError, UnknownModelError)},
    "JobTimeoutException": 504,  # RQ: the job outran JOB_TIMEOUT_S
    "NoWorkerError": 503,  # the API: no live worker took the job in JOB_TIMEOUT_S
}
# Server-side failures whose message is safe and useful to pass on (the rest stay in the worker's log).
PUBLIC_ERRORS = ("JobTimeoutException", "AbandonedJobError", "NoWorkerError", POISON_ERROR)
INTERNAL_ERROR_MESSAGE = "the job failed on the server (an internal error, logged by the worker); retrying may help"
ABANDONED_MESSAGE = "the worker running this job stopped (killed or lost) before the job finished"


def error_info(exc: BaseException) -> dict[str, Any]:
    """A job's exception -> {"type", "message", "status"}, as the worker records it for the API."""
    kind = type(exc).__name__
    message = ABANDONED_MESSAGE if kind == "AbandonedJobError" else str(exc) or kind
    status = exc.status if isinstance(exc, JobError) else ERROR_STATUS.get(kind, 500)
    return {"type": kind, "message": message[:2000], "status": status}


def parse_error(text: str | None) -> dict[str, Any] | None:
    """A failed job's exception text (RQ's traceback string, or "Name: message") -> error_info's dict for its last
    exception, or None when the text names none."""
    text = (text or "").rstrip()
    at = text.rfind("Traceback (most recent call last):")
    if at >= 0:  # the last exception: the first unindented line after its frames
        lines = text[at:].splitlines()[1:]
        while lines and (not lines[0] or lines[0][0].isspace()):
            lines.pop(0)
        text = "\n".join(lines)
    head, _, message = text.partition(": ")
    kind = head.rsplit(".", 1)[-1].strip()
    if not kind.isidentifier():
        return None
    return {"type": kind, "message": message.strip() or kind, "status": ERROR_STATUS.get(kind, 500)}


def public(error: dict[str, Any] | None) -> tuple[int, str]:
    """(HTTP status, message) the API answers for a failed job's error: bad input and the PUBLIC_ERRORS word for
    word, anything else a 500 whose details stay in the worker's log."""
    error = error or {}
    status = int(error.get("status", 500))
    if error.get("type") in PUBLIC_ERRORS or 400 <= status < 500:
        return status, str(error.get("message") or INTERNAL_ERROR_MESSAGE)
    return 500, INTERNAL_ERROR_MESSAGE


# Parameters --------------------------------------------------------------------------------------------------------
# One model per job kind. The API validates request bodies with them (lax, by the public names: `prime`), the job
# functions the job's parameters (strict JSON types, by field name: `prime_b64`); `describe` words the failures of
# both the same way.


class Want:
    """What a field takes, in words, for `describe` (metadata of an Annotated field; not in the JSON schema)."""

    def __init__(self, text: str):
        self.text = text


ModelName = Annotated[
    str | None,
    Field(
        min_length=1,
        max_length=limits.MAX_MODEL_NAME_CHARS,
        pattern=limits.MODEL_NAME_PATTERN,
        description="Checkpoint name (file stem, see GET /models; the names depend on the server's checkpoints): "
        f"letters, digits, '.', '_' and '-', at most {limits.MAX_MODEL_NAME_CHARS} characters. Omitted: the default "
        "model of the modality. A well-formed name that no loaded checkpoint has: 404.",
        examples=[None],
    ),
    Want("a checkpoint name such as 'speech-vrnn-gmm' (letters, digits, '.', '_' and '-'; see /models)"),
]
Seed = Annotated[
    int | None,
    Field(
        ge=0,
        le=limits.MAX_SEED,
        description="Random seed: the same seed, model and parameters give the same bytes. Omitted: drawn at random "
        "and reported in the X-Seed header.",
    ),
    Want("a whole number from 0 to 2**63 - 1 (or null for a random one)"),
]
Temperature = Annotated[
    float,
    Field(
        gt=0,
        le=limits.MAX_TEMPERATURE,
        description=f"Scales the output distribution's spread (1: as trained): any number above 0 and at most "
        f"{limits.MAX_TEMPERATURE:g}. Near 0 the sample tends to the most likely mixture component's mean (tiny and "
        "subnormal values give that limit); above about 2 it is mostly noise.",
    ),
]
Base64 = Want("a base64 string (the file's bytes, base64-encoded)")


class _Params(BaseModel):
    # Unknown fields are refused, so that a misspelt parameter is an error rather than silently ignored.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class SpeechRequest(_Params):
    model: ModelName = None
    duration_s: float = Field(
        DEFAULT_DURATION_S, ge=limits.MIN_DURATION_S, le=limits.MAX_DURATION_S, description="Seconds of audio."
    )
    seed: Seed = None
    temperature: Temperature = 1.0
    mean: bool = Field(False, description="Emit the decoder mean instead of a sample (X-Output says which).")
    prime_b64: Annotated[str | None, Base64] = Field(
        None,
        alias="prime",
        description="Base64 WAV or FLAC audio to continue from; the response holds only the continuation.",
    )

    def job_params(self) -> dict[str, Any]:
        return self.model_dump()


def _text_lines(value: str | None) -> str | None:
    """`text`'s bounds: at most MAX_TEXT_LINES lines, each with at least one character that is not white space and
    at most MAX_TEXT_LINE_CHARS characters."""
    if value is None:
        return None
    lines = value.split("\n")
    if len(lines) > limits.MAX_TEXT_LINES:
        raise ValueError(
            f"it has {len(lines)} lines and at most {limits.MAX_TEXT_LINES} are written; send fewer lines "
            "(one request per paragraph)"
        )
    for i, line in enumerate(lines, 1):
        if not line.strip():
            raise ValueError(
                f"line {i} is empty; remove the empty line (lines are separated by one '\\n') or write something on it"
            )
        if len(line) > limits.MAX_TEXT_LINE_CHARS:
            raise ValueError(
                f"line {i} has {len(line)} characters and at most {limits.MAX_TEXT_LINE_CHARS} fit in a line; "
                "split it into shorter lines with '\\n'"
            )
    return value


def _prime_text(value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise ValueError("it is empty; send the text of the primed line ('prime'), as written there")
    return value


TextLines = Annotated[
    str | None,
    AfterValidator(_text_lines),
    Want(
        f"a string of at most {limits.MAX_TEXT_LINES} lines separated by '\\n', each of 1 to "
        f"{limits.MAX_TEXT_LINE_CHARS} characters"
    ),
]
PrimeText = Annotated[str | None, AfterValidator(_prime_text), Want("the text of the primed line, as a string")]
StyleName = Annotated[
    str | None,
    Field(
        min_length=1,
        max_length=limits.MAX_STYLE_NAME_CHARS,
        pattern=limits.MODEL_NAME_PATTERN,
        description="With `text`: the name of a style shipped with the model (GET /models: its `styles`, e.g. "
        "'w058'): the model is primed with that writer's line and its text, as `prime` with `prime_text` would, and "
        "writes `text` (or, without `text`, the line it makes up) in that style. Not with `prime` or `prime_text`; a "
        "name the model lacks: 422 listing its "
        f"styles. Letters, digits, '.', '_' and '-', at most {limits.MAX_STYLE_NAME_CHARS} characters.",
        examples=[None],
    ),
    Want("a style name such as 'w058' (letters, digits, '.', '_' and '-'; see the model's styles in /models)"),
]


def _upload_text(value: str | None) -> str | None:
    """The text of an uploaded line (score, analyze_latent): one line of `text`'s bounds."""
    if value is None:
        return None
    if "\n" in value:
        raise ValueError(
            f"it has {value.count(chr(10)) + 1} lines, and an upload is read as one line of handwriting; send its "
            "text on one line (replace each '\\n' with a space)"
        )
    if not value.strip():
        raise ValueError("it is empty; send the text written in the uploaded line, or remove 'text'")
    return value


UploadText = Annotated[
    str | None,
    AfterValidator(_upload_text),
    Want(f"the text written in the upload: one line of 1 to {limits.MAX_TEXT_LINE_CHARS} characters"),
]


class HandwritingRequest(_Params):
    model: ModelName = None
    text: TextLines = Field(
        None,
        max_length=limits.MAX_TEXT_LINES * (limits.MAX_TEXT_LINE_CHARS + 1) - 1,
        description=f"Text to write, with a model that writes text (GET /models: takes_text; omitted `model`: the "
        f"default one): at most {limits.MAX_TEXT_LINES} lines separated by '\\n', each of at most "
        f"{limits.MAX_TEXT_LINE_CHARS} characters of the model's alphabet (others: 422 naming them), stacked in "
        "one SVG (format=json: the texts and the offsets of each line). A line ends when the model has written its "
        f"last character, or at `steps` pen steps when `steps` is not its default {DEFAULT_STEPS} (at the default: 40 "
        "pen steps per character of the longest line). Omitted, with no `model` (or a text model) and no `prime`: "
        "the text model makes up a line of its corpus's words that fits in `steps` (GET /models: invents_text; the "
        "X-Text header says what it wrote) and writes it; a model that writes no text, or no text model with a word "
        "model, or `steps` too few for a word: an unconditional line of `steps` pen steps.",
        examples=["hello world"],
    )
    steps: int = Field(
        DEFAULT_STEPS, ge=limits.MIN_STEPS, le=limits.MAX_STEPS, description="Pen steps (one line: about 700)."
    )
    seed: Seed = None
    bias: float | None = Field(
        None,
        ge=0,
        le=limits.MAX_BIAS,
        description=f"Graves' sampling bias, from 0 (none) to {limits.MAX_BIAS:g}: higher writes neater. Omitted: "
        f"{HANDWRITING_BIAS:g} for an unconditional line, {TEXT_BIAS:g} for a line of text, given or made up (the "
        "most legible settings "
        "measured, docs/RESULTS.md).",
    )
    temperature: Temperature = 1.0
    prime_b64: Annotated[str | None, Base64] = Field(
        None,
        alias="prime",
        description="Base64 IAM-OnDB XML or JSON strokes to continue from; the response holds the continuation.",
    )
    prime_text: PrimeText = Field(
        None,
        max_length=limits.MAX_PRIME_TEXT_CHARS,
        description="With `text` and `prime`: the text written in the `prime` line (one line; its characters in the "
        "model's alphabet), so that the model writes `text` in that line's style.",
    )
    style: StyleName = None
    stroke_width: float = Field(
        DEFAULT_STROKE_WIDTH, gt=0, le=limits.MAX_STROKE_WIDTH, description="SVG stroke width in pixels."
    )
    color: Annotated[str, Want("a string such as '#1a1a1a' or 'navy'")] = Field(
        DEFAULT_COLOR,
        max_length=40,
        description="Ink colour: #rgb, #rrggbb or a CSS name such as navy.",
        examples=["navy"],
    )

    def job_params(self, fmt: str) -> dict[str, Any]:
        return {**self.model_dump(), "format": fmt}


class HandwritingParams(HandwritingRequest):
    format: Literal["svg", "json"] = "svg"  # the API takes it from the query string


class DataRequest(_Params):
    """The JSON form of /score and /analyze/latent (multipart uploads carry the same fields)."""

    model: ModelName = None
    data_b64: Annotated[str, Base64] = Field(
        ...,
        min_length=1,
        description="Base64 (RFC 4648, with padding; whitespace and a `data:...;base64,` prefix are ignored) of the "
        "input: WAV/FLAC audio, IAM-OnDB XML or JSON strokes. Its decoded size is limited (MAX_UPLOAD_BYTES, 413).",
        json_schema_extra={"format": "byte", "contentEncoding": "base64"},
    )
    filename: Annotated[str | None, Want("a string such as 'speech.wav'")] = Field(
        None, max_length=limits.MAX_FILENAME_CHARS, description="Its file name; the suffix picks the parser."
    )
    text: UploadText = Field(
        None,
        max_length=limits.MAX_TEXT_LINE_CHARS,
        description="The text written in a handwriting upload (one line of at most "
        f"{limits.MAX_TEXT_LINE_CHARS} characters of the model's alphabet; others: 422 naming them), for a model that "
        "writes text (GET /models: takes_text; omitted `model`: the default one): the result is then conditional on "
        "it (`conditional`: true). Such a model needs it; other models and speech uploads refuse it (422).",
        examples=["hello world"],
    )


class ScoreRequest(DataRequest):
    num_samples: int = Field(
        DEFAULT_NUM_SAMPLES,
        ge=limits.MIN_NUM_SAMPLES,
        le=limits.MAX_NUM_SAMPLES,
        description="Importance samples K of the likelihood estimate (the paper: 40). Ignored by RNN models (exact).",
    )


class AnalyzeRequest(DataRequest):
    pass


class AnalyzeParams(AnalyzeRequest):
    format: Literal["json", "png"] = "json"  # the API takes it from the query string


class NoParams(_Params):
    pass


PARAM_MODELS: dict[str, type[_Params]] = {
    "generate_speech": SpeechRequest,
    "generate_handwriting": HandwritingParams,
    "score": ScoreRequest,
    "analyze_latent": AnalyzeParams,
    "list_models": NoParams,
}
KINDS = tuple(PARAM_MODELS)
PARAMS = {kind: tuple(m.model_fields) for kind, m in PARAM_MODELS.items()}  # each kind's parameter names


def parse_params(kind: str, params: Any) -> Any:
    """A job's parameters (None: all defaults) -> the instance of its PARAM_MODELS model, with strict JSON types;
    JobInputError saying what to change otherwise."""
    model = PARAM_MODELS[kind]
    try:
        return model.model_validate({} if params is None else params, strict=True, by_alias=False, by_name=True)
    except ValidationError as e:
        raise JobInputError(describe(e.errors(include_url=False), model, by_alias=False)) from None


_SHOWN_CHARS = 60  # longest echo of a bad value in a message
_WHERE = ("body", "query", "form", "header")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "..."


def _want(field: FieldInfo | None, error: dict[str, Any]) -> str:
    """What `field` takes, in words: its Want, else its type and bounds."""
    if field is None:
        expected = (error.get("ctx") or {}).get("expected")
        return f"one of {expected}" if expected else error.get("msg", "valid").lower()
    for item in field.metadata:
        if isinstance(item, Want):
            return item.text
    kind = field.annotation
    if get_origin(kind) is Literal:
        return "one of " + ", ".join(repr(c) for c in get_args(kind))
    if kind is bool:
        return "true or false"
    lo = hi = None
    lo_open = False
    for item in field.metadata:
        if isinstance(item, Ge):
            lo = item.ge
        elif isinstance(item, Gt):
            lo, lo_open = item.gt, True
        elif isinstance(item, Le):
            hi = item.le
    noun = "a whole number" if kind is int else "a number"
    if lo is None or hi is None:
        return noun
    return f"{noun} above {lo:g} and at most {hi:g}" if lo_open else f"{noun} from {lo:g} to {hi:g}"


def describe(errors: Iterable[dict[str, Any]], model: type[BaseModel] | None = None, by_alias: bool = True) -> str:
    """Validation errors (pydantic's, or FastAPI's) -> one sentence per problem, each saying what to change. `by_alias`:
    fields by their names in the API (aliases such as `prime`), else by their job-parameter names."""
    fields = dict(model.model_fields) if model is not None else {}
    names = {(f.alias or n) if by_alias else n: n for n, f in fields.items()}
    parts = []
    for e in errors:
        kind = e.get("type", "")
        loc = [str(x) for x in e.get("loc", ()) if x not in _WHERE]
        name = ".".join(loc)
        field = fields.get(names.get(name, name))
        got = f", got {_shown(e.get('input'))}"
        if kind == "json_invalid":
            why = (e.get("ctx") or {}).get("error", "malformed")
            parts.append(f'the body is not valid JSON ({why}): send a JSON object such as {{"seed": 1}}')
        elif kind in ("model_type", "dict_type", "model_attributes_type"):
            parts.append(f"the parameters must be a JSON object, not {_shown(e.get('input'))}")
        elif kind == "missing":
            parts.append(f"'{name}' is required")
        elif kind == "extra_forbidden":
            allowed = ", ".join(names) if model is not None and names else "none"
            parts.append(f"'{name}' is not a parameter here; remove or correct it (the parameters are: {allowed})")
        elif kind == "finite_number":
            parts.append(f"'{name}' must be a finite number, not {_shown(e.get('input'))}; send {_want(field, e)}")
        elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
            parts.append(f"'{name}' must be {_want(field, e)}{got}; pick a value in that range")
        elif kind == "string_too_long":
            most = (e.get("ctx") or {}).get("max_length")
            parts.append(f"'{name}' must have at most {most} characters, got {len(str(e.get('input')))}; shorten it")
        elif kind == "value_error":  # a field's own check (AfterValidator): its message says what to change
            why = str((e.get("ctx") or {}).get("error") or e.get("msg", "invalid"))
            parts.append(f"'{name}': {why}")
        elif kind == "string_too_short":
            parts.append(f"'{name}' is empty; send {_want(field, e)}")
        else:  # a wrong type, a string that does not match, a value not among the choices
            parts.append(f"'{name}' must be {_want(field, e)}{got}")
    return "; ".join(parts or ["the parameters could not be read"])


def decode_base64(text: str, name: str, max_bytes: int) -> bytes:
    """A file's bytes sent as base64 text (RFC 4648; whitespace and a `data:<type>;base64,` prefix allowed) -> the
    bytes; JobInputError when it is not base64 or empty, InputTooLargeError when the file is over `max_bytes`
    (from the text's length alone when it is that long: nothing that large is decoded)."""
    text = text.strip()
    if text.startswith("data:"):  # a data: URL, as a browser's FileReader gives
        head, sep, text = text.partition(",")
        if not sep or not head.endswith(";base64"):
            raise JobInputError(f"'{name}': a data: URL must be base64-encoded ('data:<type>;base64,<data>')")
    text = "".join(text.split())
    too_large = f"'{name}' is larger than the {max_bytes} bytes allowed (MAX_UPLOAD_BYTES); send a shorter one"
    if len(text) > 4 * ((max_bytes + 2) // 3) + 4:  # past the longest valid text by more than one quantum
        raise InputTooLargeError(too_large)
    try:
        data = base64.b64decode(text, validate=True)
    except ValueError as e:  # binascii.Error, or non-ASCII text
        raise JobInputError(
            f"'{name}' is not valid base64 ({e}); send the file's bytes base64-encoded "
            "(RFC 4648: A-Z, a-z, 0-9, '+', '/' and '=' padding)"
        ) from None
    if len(data) > max_bytes:
        raise InputTooLargeError(too_large)
    if not data:
        raise JobInputError(f"'{name}' is empty; send the file's bytes base64-encoded")
    return data


# Uploads -----------------------------------------------------------------------------------------------------------

# What `sniff` accepts, for the OpenAPI document: the file's first bytes decide, not its Content-Type.
CONTENT_RULE = (
    "The content decides what it is, not its name or Content-Type: RIFF/RF64 WAVE, FLAC, Ogg or AIFF audio, a "
    ".npy array (\\x93NUMPY), or text (UTF-8, BOM and leading whitespace allowed) starting with '<' (IAM-OnDB "
    "XML), '[' or '{' (JSON strokes); anything else: 415."
)


def sniff(data: bytes) -> str | None:
    """The modality of an upload by its first bytes (CONTENT_RULE): "speech", "handwriting", or None."""
    head = data[:64]
    if (head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE") or head[:4] in (b"fLaC", b"OggS"):
        return "speech"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "speech"
    if head[:6] == b"\x93NUMPY":
        return "handwriting"
    text = data[:256].decode("utf-8", "ignore").lstrip("\ufeff \t\r\n")
    return "handwriting" if text[:1] in ("<", "[", "{") else None


# Checkpoints -------------------------------------------------------------------------------------------------------

MAX_METADATA_BYTES = 1024 * 1024  # a checkpoint's JSON is a few kB; anything this large is not one
STYLES_SUFFIX = ".styles.json"  # a text checkpoint's named styles, beside NAME.json (model.styles)
MAX_STYLES_BYTES = 1024 * 1024  # model.styles.MAX_STYLES_BYTES: a larger styles file is refused
WORDLM_SUFFIX = ".wordlm.json"  # a text checkpoint's word model, beside NAME.json (model.wordlm)
MAX_WORDLM_BYTES = 8 * 1024 * 1024  # model.wordlm.MAX_WORDLM_BYTES


def model_summary(
    name: str, meta: dict[str, Any], styles: list[str] | None = None, invents: bool = False
) -> dict[str, Any]:
    """One checkpoint's public description in GET /models (normalisation statistics and the like stay private);
    `styles`: a text model's style names ([] without any; None for the other models); `invents`: a text model that
    has a word model to make up the line of a request without text (model.wordlm)."""
    cfg = meta["config"]
    modality = cfg.get("modality")
    takes_text = bool(cfg.get("alphabet"))
    return {
        "name": name,
        "display_name": meta.get("name"),
        "modality": modality,
        "family": cfg.get("family"),
        "output": cfg.get("output"),
        "latent": cfg.get("family") != "rnn",
        "takes_text": takes_text,
        "alphabet": cfg.get("alphabet") or None,
        "styles": list(styles or []) if takes_text else None,
        "invents_text": bool(invents) if takes_text else None,
        "sample_rate": meta.get("sample_rate") if modality == "speech" else None,
        "frame_size": meta.get("frame_size", cfg.get("x_dim")),
        "params": meta.get("params"),
        "metrics": meta.get("metrics", {}),
        "dataset": meta.get("dataset", {}),
        "created": meta.get("created"),
    }


def looks_like_checkpoint(path: Path) -> bool:
    """Whether a JSON file is a checkpoint's metadata (a config object and a format version), not some other JSON."""
    try:
        if path.stat().st_size > MAX_METADATA_BYTES:
            return False
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(meta, dict) and isinstance(meta.get("config"), dict) and "format_version" in meta


def has_wordlm(meta_path: Path) -> bool:
    """Whether a NAME.wordlm.json of at most MAX_WORDLM_BYTES is beside a checkpoint's NAME.json (not read: the
    workers check it in full, model.wordlm, and publish which they loaded)."""
    path = meta_path.with_name(meta_path.name.removesuffix(".json") + WORDLM_SUFFIX)
    try:
        return path.is_file() and path.stat().st_size <= MAX_WORDLM_BYTES
    except OSError:
        return False


def style_names(meta_path: Path) -> list[str]:
    """The style names in the NAME.styles.json beside a checkpoint's NAME.json, read without checking the styles
    themselves ([] when there is none, or it is too large or not a styles file): GET /models in Redis mode, where the
    workers, which check the file in full (model.styles), publish the names they loaded."""
    path = meta_path.with_name(meta_path.name.removesuffix(".json") + STYLES_SUFFIX)
    try:
        if path.stat().st_size > MAX_STYLES_BYTES:
            return []
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return []
    styles = doc.get("styles") if isinstance(doc, dict) else None
    return [str(n) for n in styles] if isinstance(styles, dict) else []
