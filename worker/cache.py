"""The checkpoint cache: every checkpoint of a folder loaded once, kept in memory, served by name.

    cache = ModelCache("checkpoints", device="auto")   # loads NAME.safetensors + NAME.json, all of them
    model, meta, name = cache.get(None, "speech")      # the speech default
    with cache.lock(name):                             # one inference at a time per model
        ...
    cache.describe()                                   # {"models": [...], "failed": {name: message}, ...}

    cache = ModelCache("checkpoints", batch_max=16)    # batching on: concurrent generation shares one batch
    engine = cache.engine(name)                        # the model's SamplingEngine (None when batching is off)
    cache.close()                                      # stops the engines

With `batch_max` above 1 every model gets, on first use, one `model.engine.SamplingEngine` (a daemon thread) that
runs the generation requests of all the threads asking for it in one step-level batch of at most `batch_max` rows;
a request gets bit for bit what it gets alone (the engine's guarantee), so it needs no model lock. Scoring goes
through a `model.scoring.ScoringBatcher` per model the same way (requests with the same K side by side, each with its
own random stream: its solo score to float rounding); analysis keeps the lock. `engine_stats()` reads the counters
for the metrics.

A checkpoint that fails to load (missing JSON, truncated weights, bad metadata) is recorded in
`failed` with its error and the others keep serving. Models are named by file stem. Defaults per
modality: DEFAULT_SPEECH_MODEL / DEFAULT_HANDWRITING_MODEL, else a preferred VRNN (see `_pick_default`).

`get_cache()` is the process-wide cache RQ's entry points of worker.jobs use: created on first use from
CHECKPOINT_DIR (default "checkpoints") and DEVICE (model.runtime's rule; default "auto": CUDA when PyTorch sees a
GPU). The embedded backend holds a cache of its own.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.inference import load
from model.runtime import resolve_device
from model.styles import Style, StylesError, load_styles, styles_path
from model.wordlm import WordLM, WordLMError, load_wordlm, wordlm_path

from . import limits
from .contract import JobInputError, UnknownModelError, looks_like_checkpoint, model_summary

log = logging.getLogger("worker.cache")

MODALITIES = ("speech", "handwriting")
DEFAULT_ENV = {"speech": "DEFAULT_SPEECH_MODEL", "handwriting": "DEFAULT_HANDWRITING_MODEL"}
PREFERRED = {"speech": "VRNN-Gauss", "handwriting": "VRNN-GMM"}
NAME_PATTERN = re.compile(limits.MODEL_NAME_PATTERN)
# Files beside checkpoints that are not checkpoints: the trainer's resume state and temporaries.
SKIPPED_SUFFIXES = (".resume.safetensors", ".tmp.safetensors")


@dataclass
class LoadedModel:
    name: str
    model: Any  # model.VRNN, in eval mode on the cache's device
    meta: dict[str, Any]
    path: Path
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    styles: dict[str, Style] = field(default_factory=dict, repr=False)  # a text model's named styles (model.styles)
    wordlm: WordLM | None = field(default=None, repr=False)  # a text model's word model (model.wordlm), if any

    @property
    def modality(self) -> str:
        return self.meta["config"]["modality"]

    @property
    def has_latent(self) -> bool:
        return bool(self.model.config.has_latent)

    @property
    def takes_text(self) -> bool:
        """A text-conditioned handwriting model (model.conditional.TextVRNN): it writes a given text."""
        return bool(self.model.config.takes_text)


class ModelCache:
    """Every checkpoint in `directory`, loaded once on `device` ("auto", "cpu", "cuda" or "cuda:N")."""

    def __init__(
        self,
        directory: str | Path,
        device: str = "auto",
        default_speech: str | None = None,
        default_handwriting: str | None = None,
        batch_max: int = 1,
        batch_wait_s: float = 0.0,
    ):
        if isinstance(batch_max, bool) or not isinstance(batch_max, int) or batch_max < 0:
            raise ValueError(f"BATCH_MAX must be a whole number >= 0 (0 or 1: no batching), got {batch_max!r}")
        if not (isinstance(batch_wait_s, int | float) and 0 <= batch_wait_s <= 10):
            raise ValueError(f"BATCH_WAIT_MS must be from 0 to 10000 ms, got {batch_wait_s!r} s")
        self.batch_max, self.batch_wait_s = batch_max, float(batch_wait_s)
        self._engines: dict[str, Any] = {}  # name -> model.engine.SamplingEngine, created on first use
        self._scorers: dict[str, Any] = {}  # name -> model.scoring.ScoringBatcher, created on first use
        self._engines_lock = threading.Lock()
        self._closed = False
        self.directory = Path(directory)
        try:
            self.device = str(resolve_device(device))  # the one device rule of model.runtime
        except ValueError as e:
            raise ValueError(f"DEVICE: {e}") from None
        self._models: dict[str, LoadedModel] = {}
        self.failed: dict[str, str] = {}
        self.warnings: list[str] = []
        self._load_all()
        wanted = {
            "speech": default_speech or os.environ.get(DEFAULT_ENV["speech"]) or None,
            "handwriting": default_handwriting or os.environ.get(DEFAULT_ENV["handwriting"]) or None,
        }
        self.defaults: dict[str, str | None] = {m: self._pick_default(m, wanted[m]) for m in MODALITIES}
        # The model of a request with text (never a default for one without): a preferred text VRNN, else the first.
        self.text_default: str | None = self._pick_text_default()
        if self.batch_max > 1 and not self.batching:
            message = f"BATCH_MAX={self.batch_max}: batching runs on the CPU only; on {self.device} it is off"
            self.warnings.append(message)
            log.warning(message)

    # Loading ------------------------------------------------------------------------------------

    def _load_all(self) -> None:
        if not self.directory.is_dir():
            self.warnings.append(f"checkpoint directory {self.directory} does not exist")
            log.warning("checkpoint directory %s does not exist: no models loaded", self.directory)
            return
        weights = sorted(
            p for p in self.directory.glob("*.safetensors") if not p.name.endswith(SKIPPED_SUFFIXES) and p.is_file()
        )
        for path in weights:
            name = path.stem
            if not (NAME_PATTERN.fullmatch(name) and len(name) <= limits.MAX_MODEL_NAME_CHARS):
                self.failed[name] = (
                    f"{path}: the file name is not a usable model name; rename it to letters, digits, '.', '_' "
                    f"and '-' (at most {limits.MAX_MODEL_NAME_CHARS} characters)"
                )
                continue
            try:
                model, meta = load(path, device=self.device, text=True)
            except Exception as e:  # one bad file must not stop the others, whatever it raises
                message = str(e) or type(e).__name__
                if str(path) not in message:
                    message = f"{path}: {message}"
                self.failed[name] = message
                log.error("checkpoint %s failed to load: %s", name, message)
                continue
            entry = self._models[name] = LoadedModel(name, model, meta, path)
            if entry.takes_text:
                entry.styles = self._load_styles(name, path, model.config.alphabet)
                entry.wordlm = self._load_wordlm(name, path, model.config.alphabet)
            log.info(
                "loaded checkpoint %s (%s %s, %s) on %s",
                name,
                meta["config"]["modality"],
                meta.get("name", model.config.name),
                f"{meta.get('params', 0):,} parameters",
                self.device,
            )
        # A checkpoint's JSON without its weights is a broken checkpoint too (other JSON files are ignored).
        for meta_path in sorted(self.directory.glob("*.json")):
            name = meta_path.stem
            known = name in self._models or name in self.failed or "." in name
            if known or meta_path.with_suffix(".safetensors").exists():
                continue
            if looks_like_checkpoint(meta_path):
                weights = meta_path.with_suffix(".safetensors")
                self.failed[name] = f"{weights}: missing (the JSON has no weights beside it)"
                log.error("checkpoint %s failed to load: %s", name, self.failed[name])

    def _load_styles(self, name: str, path: Path, alphabet: str) -> dict[str, Style]:
        """A text model's NAME.styles.json ({} when absent); one that is too large or invalid is left out with a
        warning, and the model serves without named styles."""
        styles = self._sidecar(name, styles_path(path), "its styles are", lambda: load_styles(path, alphabet))
        if styles:
            log.info("checkpoint %s: %d style(s): %s", name, len(styles), ", ".join(styles))
        return styles or {}

    def _load_wordlm(self, name: str, path: Path, alphabet: str) -> WordLM | None:
        """A text model's NAME.wordlm.json (None when absent); one that is too large or invalid is left out with a
        warning, and the model makes up no lines (a request without text then samples an unconditional line)."""
        lm = self._sidecar(name, wordlm_path(path), "its word model is", lambda: load_wordlm(path, alphabet))
        if lm is not None:
            log.info("checkpoint %s: a word model of %d words (%s)", name, lm.vocabulary, lm.info.get("corpus"))
        return lm

    def _sidecar(self, name: str, file: Path, what: str, read: Callable[[], Any]) -> Any:  # what: "its styles are"
        """`read()` of a file beside checkpoint `name` (its styles, its word model), or None with a warning naming the
        file when it raises the ValueError of a file that is too large or invalid (StylesError, WordLMError)."""
        try:
            return read()
        except (StylesError, WordLMError) as e:
            message = str(e)
            if str(file) not in message:
                message = f"{file}: {message}"
            message = f"checkpoint {name}: {what} not loaded: {message}"
            self.warnings.append(message)
            log.warning(message)
            return None

    def _pick_default(self, modality: str, wanted: str | None) -> str | None:
        """The setting's model if it is loaded and of this modality, else a preferred one (below)."""
        if wanted:
            entry = self._models.get(wanted)
            if entry is not None and entry.modality == modality and not entry.takes_text:
                return wanted
            why = "is not loaded" if entry is None else f"is a {entry.modality} model"
            if entry is not None and entry.takes_text:
                why = "writes given text only (a text model is the default of requests with text)"
            if wanted in self.failed:
                why = f"failed to load ({self.failed[wanted]})"
            message = f"{DEFAULT_ENV[modality]}={wanted} {why}; using the preferred {modality} model instead"
            self.warnings.append(message)
            log.warning(message)
        # Without a setting, the paper's best sampler of the modality (VRNN-Gauss for speech, Section 5;
        # VRNN-GMM for handwriting, Figure 4), else any VRNN, else the first model.
        preferred = (PREFERRED[modality], "VRNN-GMM", "VRNN-Gauss", "VRNN-I-GMM", "VRNN-I-Gauss")
        return self._preferred(lambda e: e.modality == modality and not e.takes_text, preferred)

    def _pick_text_default(self) -> str | None:
        return self._preferred(
            lambda e: e.takes_text, ("Text-VRNN-GMM", "Text-VRNN-Gauss", "Text-VRNN-I-GMM", "Text-VRNN-I-Gauss")
        )

    def _preferred(self, eligible: Callable[[LoadedModel], bool], preferred: tuple[str, ...]) -> str | None:
        """The first eligible model (in load order) of the first display name in `preferred` that has one, else the
        first eligible model; None when none is eligible."""
        candidates = [(n, e) for n, e in self._models.items() if eligible(e)]
        names = [e.meta.get("name") for _, e in candidates]
        for display in preferred:
            if display in names:
                return candidates[names.index(display)][0]
        return candidates[0][0] if candidates else None

    # Access -------------------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        """Loaded model names, in load order (sorted by file name)."""
        return list(self._models)

    def __len__(self) -> int:
        return len(self._models)

    def __contains__(self, name: object) -> bool:
        return name in self._models

    def get(
        self,
        name: str | None = None,
        modality: str | None = None,
        latent: bool = False,
        text: bool = False,
        *,
        upload: bool = False,
    ) -> tuple[Any, dict, str]:
        """-> (model, metadata, name). `name` None picks the default of `modality` (with `latent`, the
        default if it has latent variables, else the first loaded model of that modality that has). `text`: a
        text-conditioned handwriting model (None: `text_default`, or with `latent` the first text model with latent
        variables); without it, text models are never picked and a named one is refused (it needs its text).
        `upload`: the model reads an upload (score, analyze_latent) rather than writes; it only words the refusals.

        Raises UnknownModelError (no such model, or none of that modality) and JobInputError (a model
        of the other modality, a name that is not a string, an RNN where latent variables are needed, a text model
        where none is asked for or the reverse)."""
        if modality is not None and modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
        if name is None and text:
            entry = self._text_entry(latent, upload)
            return entry.model, entry.meta, entry.name
        if name is None:
            if modality is None:
                raise ValueError("give a model name or a modality")
            entry = self._default_entry(modality, latent)
            return entry.model, entry.meta, entry.name
        if not isinstance(name, str) or not name:
            raise JobInputError(f"model must be a checkpoint name (a non-empty string), got {name!r}")
        entry = self._models.get(name)
        if entry is None:
            shown = name if len(name) <= limits.MAX_MODEL_NAME_CHARS else name[: limits.MAX_MODEL_NAME_CHARS] + "..."
            if name in self.failed:
                raise UnknownModelError(f"model {shown!r} is not available: it failed to load ({self.failed[name]})")
            raise UnknownModelError(f"no model named {shown!r}; {self._choices(modality, text=text)}")
        if modality is not None and entry.modality != modality:
            choices = self._choices(modality, text=text)
            raise JobInputError(f"model {name!r} is a {entry.modality} model, not a {modality} one; {choices}")
        kind = entry.model.config.name
        if text and not entry.takes_text:
            use = "read the upload without it" if upload else "sample an unconditional line with it"
            raise JobInputError(
                f"model {name!r} ({kind}) does not take text; remove 'text' to {use}, "
                f"or pick a model that writes text: {self._choices('handwriting', text=True, latent=latent)}"
            )
        if not text and entry.takes_text:
            if modality == "handwriting" and not upload:
                raise JobInputError(
                    f"model {name!r} ({kind}) writes a given text; send 'text' (the lines to write), or pick an "
                    f"unconditional model: {self._choices('handwriting')}"
                )
            raise JobInputError(
                f"model {name!r} ({kind}) is conditioned on text; send 'text' (the text written in the uploaded "
                f"line), or pick an unconditional model: {self._choices(modality or entry.modality, latent=latent)}"
            )
        if latent and not entry.has_latent:
            raise JobInputError(
                f"model {name!r} ({entry.model.config.name}) has no latent variables to analyse; "
                f"pick a VRNN or VRNN-I model: {self._choices(modality or entry.modality, latent=True, text=text)}"
            )
        return entry.model, entry.meta, entry.name

    def _text_entry(self, latent: bool, upload: bool) -> LoadedModel:
        """The text model of a request with text and no model: `text_default`, or with `latent` (analysis) the
        first text model with latent variables when the default has none."""
        if self.text_default is not None and (not latent or self._models[self.text_default].has_latent):
            return self._models[self.text_default]
        for entry in self._models.values():
            if entry.takes_text and (not latent or entry.has_latent):
                return entry
        failed = list(self.failed)
        extra = f" ({len(failed)} checkpoint(s) failed to load: {', '.join(failed)})" if failed else ""
        what = "handwriting model that writes text" + (" with latent variables (VRNN or VRNN-I)" if latent else "")
        use = "read the upload unconditionally" if upload else "sample an unconditional line"
        raise UnknownModelError(
            f"no {what} is loaded from {self.directory}{extra}; remove 'text' to {use}, or add a checkpoint trained "
            "with `python -m model.train --condition text`"
        )

    def _default_entry(self, modality: str, latent: bool) -> LoadedModel:
        default = self.defaults.get(modality)
        if default is not None and (not latent or self._models[default].has_latent):
            return self._models[default]
        for entry in self._models.values():
            if entry.modality == modality and not entry.takes_text and (not latent or entry.has_latent):
                return entry
        what = f"{modality} model with latent variables (VRNN or VRNN-I)" if latent else f"{modality} model"
        failed = list(self.failed)
        extra = f" ({len(failed)} checkpoint(s) failed to load: {', '.join(failed)})" if failed else ""
        raise UnknownModelError(f"no {what} is loaded from {self.directory}{extra}")

    def _choices(self, modality: str | None, latent: bool = False, text: bool = False) -> str:
        names = [
            n
            for n, e in self._models.items()
            if (modality is None or e.modality == modality) and (not latent or e.has_latent) and e.takes_text == text
        ]
        kind = f"{modality} models" if modality else "models"
        kind = f"{kind} that write text" if text else kind
        return f"the loaded {kind} are {', '.join(names)}" if names else f"no {kind} are loaded"

    def style(self, name: str, style: str) -> Style:
        """The named style of loaded text model `name`; JobInputError listing its styles when it has no such one."""
        entry = self._models.get(name)
        if entry is None:
            raise UnknownModelError(f"no model named {name!r}")
        found = entry.styles.get(style)
        if found is not None:
            return found
        shown = style if len(style) <= limits.MAX_STYLE_NAME_CHARS else style[: limits.MAX_STYLE_NAME_CHARS] + "..."
        if entry.styles:
            raise JobInputError(
                f"model {name!r} has no style {shown!r}; pick one of its styles: {', '.join(entry.styles)} "
                "(GET /models), or send a line of your own as 'prime' with its text as 'prime_text'"
            )
        raise JobInputError(
            f"model {name!r} has no named styles (GET /models: styles); remove 'style', or send a line of your own "
            "as 'prime' with its text as 'prime_text'"
        )

    def inventor(self, name: str | None) -> tuple[str, WordLM] | None:
        """The text model, and its word model, that makes up the line of a handwriting request without text that
        names model `name` (None: the text default): None when that request samples an unconditional line (no model
        named and no text default with a word model, or a model named that does not write text or is not loaded:
        `get` words those errors). A named text model without a word model: JobInputError."""
        key = self.text_default if name is None else name
        entry = None if key is None else self._models.get(key)
        if entry is None or not entry.takes_text:
            return None
        if entry.wordlm is None:
            if name is None:
                return None
            raise JobInputError(
                f"model {name!r} writes a given text and has no word model to make a line up "
                f"({wordlm_path(entry.path).name}, `python -m model.wordlm`); send 'text' (the lines to write), or "
                "pick an unconditional model: "
                f"{self._choices('handwriting')}"
            )
        return entry.name, entry.wordlm

    def inventors(self) -> list[str]:
        """The text models that loaded a word model: they make up the line of a request without text."""
        return [n for n, e in self._models.items() if e.wordlm is not None]

    def style_names(self) -> dict[str, list[str]]:
        """{text model: the names of its loaded styles}."""
        return {n: list(e.styles) for n, e in self._models.items() if e.takes_text}

    def lock(self, name: str) -> threading.Lock:
        """The inference lock of a loaded model: hold it while the model runs (a thread pool may call
        the job functions concurrently; one model's modules are not re-entrant-safe to share)."""
        try:
            return self._models[name].lock
        except KeyError:
            raise UnknownModelError(f"no model named {name!r}") from None

    # Batching -----------------------------------------------------------------------------------

    @property
    def batching(self) -> bool:
        """Whether generation goes through the engines: batch_max > 1, on the CPU. The engine's row-invariance (each
        row computed as a batch of one, bit for bit) is established and tested for the CPU kernels only; on a GPU the
        cache samples unbatched, as before, until it is checked there too."""
        return self.batch_max > 1 and self.device == "cpu"

    def engine(self, name: str) -> Any:
        """The running sampling engine of a loaded model (created and started on first use): a SamplingEngine, or a
        text model's TextEngine (where the native library runs: `model.fused.supports_text`), or None when batching
        is off (batch_max 0 or 1), the cache is closed or a text model cannot batch here: then sample under
        `lock(name)` as before."""
        from model.engine import SamplingEngine, TextEngine
        from model.fused import supports_text

        entry = self._models.get(name)
        if entry is not None and entry.takes_text:
            if not supports_text(entry.model):
                return None
            return self._batcher(self._engines, name, "text engine", TextEngine)
        return self._batcher(self._engines, name, "sampling engine", SamplingEngine)

    def scorer(self, name: str) -> Any:
        """The running `model.scoring.ScoringBatcher` of a loaded model (concurrent scoring requests with the same K
        run as one batch, each with its own random stream), or None when batching is off: then score under
        `lock(name)` as before."""
        from model.scoring import ScoringBatcher

        return self._batcher(self._scorers, name, "scoring batcher", ScoringBatcher)

    def _batcher(self, running: dict[str, Any], name: str, what: str, make: Any) -> Any:
        if not self.batching or self._closed:
            return None
        batcher = running.get(name)
        if batcher is not None and batcher.alive:
            return batcher
        with self._engines_lock:
            if self._closed:
                return None
            batcher = running.get(name)
            if batcher is not None and not batcher.alive:  # its thread died: a fresh one takes over
                log.error("the %s of %s stopped; starting a new one", what, name)
                batcher = None
            if batcher is None:
                try:
                    model = self._models[name].model
                except KeyError:
                    raise UnknownModelError(f"no model named {name!r}") from None
                batcher = make(model, max_batch=self.batch_max, max_wait_s=self.batch_wait_s).start()
                running[name] = batcher
                log.info("%s of %s started (at most %d rows per step)", what, name, self.batch_max)
        return batcher

    def engine_stats(self) -> dict[str, dict[str, Any]]:
        """Per model with a started engine, `SamplingEngine.stats.snapshot()`: {"steps", "requests", "batch_sizes":
        {rows: steps}, "wait_buckets_s", "wait_counts", "wait_sum_s"} (the queue-wait histogram); a model's scoring
        batcher as "NAME/score" (steps: batches, rows: sequences per batch)."""
        with self._engines_lock:
            running = {**self._engines, **{f"{name}/score": b for name, b in self._scorers.items()}}
        return {name: batcher.stats.snapshot() for name, batcher in running.items()}

    def close(self, timeout: float | None = 10.0) -> None:
        """Stop the engines and scoring batchers (each finishes the requests it holds first); later generation and
        scoring run unbatched."""
        with self._engines_lock:
            self._closed = True
            batchers = [*self._engines.values(), *self._scorers.values()]
        for batcher in batchers:
            batcher.stop(timeout)

    def describe(self) -> dict[str, Any]:
        """JSON-safe metadata of every loaded model, the load failures, the defaults and the device."""
        models = [
            {
                **model_summary(name, e.meta, list(e.styles), e.wordlm is not None),
                "default": self.defaults.get(e.modality) == name,
                "text_default": self.text_default == name,  # the model a request with text and no model gets
            }
            for name, e in self._models.items()
        ]
        return {
            "models": models,
            "failed": dict(self.failed),
            "defaults": dict(self.defaults),
            "device": self.device,
        }


# The process-wide cache ----------------------------------------------------------------------------

_cache: ModelCache | None = None
_cache_lock = threading.Lock()


def get_cache() -> ModelCache:
    """The process's cache, created once (thread-safe) from CHECKPOINT_DIR and DEVICE."""
    global _cache
    if _cache is None:
        with _cache_lock:
            if _cache is None:
                directory = os.environ.get("CHECKPOINT_DIR") or "checkpoints"
                _cache = ModelCache(directory, os.environ.get("DEVICE") or "auto")
    return _cache


def set_cache(cache: ModelCache | None) -> None:
    """Install `cache` as the process-wide one (None: the next `get_cache()` loads afresh). For the worker's
    start-up and for tests."""
    global _cache
    with _cache_lock:
        _cache = cache
