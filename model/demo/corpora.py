"""Build the demo corpora from a seed; model/prepare.py is their command line and says what each holds."""

from __future__ import annotations

import json
import math
import random
import shutil
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..data.defaults import CHUNK_SECONDS, SAMPLE_RATE
from ..data.errors import DataError
from . import defaults

FESTIVAL_BATCH = 10  # sentences per festival process: amortises its start-up, keeps the progress bar moving


class PrepareError(RuntimeError):
    """A missing tool or a failed build; model.prepare.main() prints it and exits with status 1."""


# Speech ------------------------------------------------------------------------------------------


def build_speech_demo(
    out: Path,
    size: str = "small",
    seed: int = defaults.DEMO_SEED,
    synthesiser: str = "auto",
    jobs: int = 2,
    progress: bool = False,
    utterances: int | None = None,
) -> dict[str, Any]:
    """Synthesise the speech demo into out/wav/ and out/manifest.json; returns the manifest."""
    import soundfile as sf

    from ..data.speech import load_audio
    from .sentences import sentences
    from .tts import SynthesiserError, choose_synthesiser, synthesise

    try:
        synth = choose_synthesiser(synthesiser)
    except SynthesiserError as e:
        raise PrepareError(str(e)) from None
    n = utterances or defaults.SPEECH_DEMO_UTTERANCES[size]
    texts = sentences(n, seed)
    rate = SAMPLE_RATE
    stage = _stage(out)
    try:
        (stage / "wav").mkdir()
        native = Path(tempfile.mkdtemp(prefix="native-", dir=stage))
        batches = [list(range(i, min(i + FESTIVAL_BATCH, n))) for i in range(0, n, FESTIVAL_BATCH)]
        records: list[dict[str, Any]] = [{} for _ in range(n)]

        def run(batch: list[int]) -> list[int]:
            synthesise([texts[i] for i in batch], [native / f"{i:05d}.wav" for i in batch], synth)
            return batch

        bar = _bar(n, "synthesising", progress)
        try:
            with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
                for batch in pool.map(run, batches):
                    for i in batch:
                        wave = load_audio(native / f"{i:05d}.wav", rate)  # resampled to 16 kHz
                        peak = float(np.abs(wave).max())
                        if peak > 0.99:  # resampling can overshoot a full-scale input a little
                            wave = wave * (0.99 / peak)
                        name = f"wav/utt{i + 1:05d}.wav"
                        sf.write(stage / name, wave, rate, subtype="PCM_16")
                        records[i] = {"file": name, "text": texts[i], "seconds": round(len(wave) / rate, 3)}
                    bar.update(len(batch))
        except (SynthesiserError, DataError) as e:
            raise PrepareError(str(e)) from None
        finally:
            bar.close()
        shutil.rmtree(native)
        seconds = sum(r["seconds"] for r in records)
        manifest = {
            "kind": "speech-demo",
            "size": size,
            "seed": seed,
            "synthesiser": synth,
            "voice": defaults.FESTIVAL_VOICE if synth == "festival" else "en-us",
            "sample_rate": rate,
            "utterances": n,
            "total_seconds": round(seconds, 2),
            "chunks_of_0.5s": int(sum(math.floor(r["seconds"] / CHUNK_SECONDS) for r in records)),
            "files": records,
        }
        _publish(stage, out, "wav", manifest)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return manifest


# Handwriting -------------------------------------------------------------------------------------

HANDWRITING_TEXTS = ("grammar", "alphabet")


def build_handwriting_demo(
    out: Path,
    size: str = "small",
    seed: int = defaults.DEMO_SEED,
    progress: bool = False,
    lines: int | None = None,
    writers: int | None = None,
    texts: str = "grammar",
    extra_train_seeds: tuple[int, ...] = (),
) -> dict[str, Any]:
    """Write the handwriting demo into out/lineStrokes/ and out/manifest.json; returns the manifest. `texts`:
    "grammar" (the lines of the shipped models' corpus) or "alphabet" (the grammar's lines with tokens it never
    writes put in, so that every character of a text model's default alphabet occurs: digits, capitals, j, z,
    apostrophes, quotes, brackets, ...).

    `extra_train_seeds`: also write the corpus of each of these seeds, its writers renamed v001..., u001..., ... (a
    letter each, counting down from w; the manifest names their seeds), as more training material: IAM-OnDB-style
    form lists beside it (trainset.txt, testset_v.txt, testset_t.txt; what the loader's default split reads first)
    keep exactly the validation and test writers that the corpus of `seed` alone gets by writer, and put every
    extra writer in training, so models trained on either corpus are scored on the same lines."""
    from .hershey import font_source, load_font
    from .writers import DEMO_FONTS

    if texts not in HANDWRITING_TEXTS:
        raise ValueError(f"texts must be one of {HANDWRITING_TEXTS}, got {texts!r}")
    extra = tuple(extra_train_seeds)
    problem = extra_seeds_problem(seed, extra)
    if problem:
        raise ValueError(f"extra_train_seeds {problem}, got {list(extra)}")
    n_lines = lines or defaults.HANDWRITING_DEMO_LINES[size]
    n_writers = min(writers or defaults.HANDWRITING_DEMO_WRITERS[size], n_lines)
    try:
        fonts = {name: load_font(name) for name in DEMO_FONTS}
    except DataError as e:
        raise PrepareError(str(e)) from None
    stage = _stage(out)
    try:
        bar = _bar(n_lines * (1 + len(extra)), "writing", progress)
        corpus = (fonts, n_lines, n_writers, texts, bar)
        people, records = _write_lines(stage, seed, "w", *corpus)
        extras = [(s, *_write_lines(stage, s, EXTRA_PREFIXES[i], *corpus)) for i, s in enumerate(extra)]
        bar.close()
        manifest: dict[str, Any] = {
            "kind": "handwriting-demo",
            "size": size,
            "seed": seed,
            "fonts": list(DEMO_FONTS),
            "font_source": font_source(),
            "lines": n_lines,
            "points": int(sum(r["points"] for r in records)),
            "writers": [w.to_dict() for w in people],
            "files": records,
        }
        if texts != "grammar":  # (the grammar's manifest stays as it was)
            manifest["texts"] = texts
        lists: dict[str, list[str]] = {}
        if extras:
            from ..data.corpus import split_items
            from ..data.defaults import SPLIT_FRACTIONS, SPLIT_SEED

            train, valid, test = split_items(sorted(w.id for w in people), SPLIT_FRACTIONS, SPLIT_SEED)
            extra_ids = [w.id for _, more, _ in extras for w in more]
            lists = {"trainset.txt": train + extra_ids, "testset_v.txt": valid, "testset_t.txt": test}
            manifest["extra_train_seeds"] = [
                {"seed": s, "writers": len(more), "lines": len(recs), "points": int(sum(r["points"] for r in recs))}
                for s, more, recs in extras
            ]
            manifest["writers"] += [w.to_dict() for _, more, _ in extras for w in more]
            manifest["files"] = records + [r for _, _, recs in extras for r in recs]
        for name, ids in lists.items():
            (stage / name).write_text("\n".join(ids) + "\n")
        _publish(stage, out, "lineStrokes", manifest, extra=tuple(lists), stale=SPLIT_LIST_FILES)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return manifest


# Writer names of the extra seeds' corpora, in order: v001..., u001..., ... a001 (the base corpus's are w001...).
EXTRA_PREFIXES = tuple(chr(c) for c in range(ord("v"), ord("a") - 1, -1))
# The form lists an extended corpus writes (data.handwriting.IAM_SPLIT_FILES reads them); a rebuild removes old ones.
SPLIT_LIST_FILES = ("trainset.txt", "testset_v.txt", "testset_t.txt")


def extra_seeds_problem(seed: int, extra: tuple[int, ...], seed_name: str = "seed") -> str | None:
    """What is wrong with `extra` as the extra training seeds of the corpus of `seed` (None: nothing)."""
    if seed in extra or len(set(extra)) != len(extra) or len(extra) > len(EXTRA_PREFIXES):
        return f"must be at most {len(EXTRA_PREFIXES)} distinct seeds that differ from {seed_name} {seed}"
    return None


def _write_lines(
    stage: Path, seed: int, prefix: str, fonts: dict[str, Any], n_lines: int, n_writers: int, texts: str, bar: Any
) -> tuple[list[Any], list[dict[str, Any]]]:
    """The `n_lines` lines of the corpus of `seed` into stage/lineStrokes/, by writers named prefix001...: (the
    writers, one record per line)."""
    from .sentences import alphabet_line, text_line
    from .writers import draw_writer, line_strokes_xml, write_line

    make_line = text_line if texts == "grammar" else alphabet_line
    style_rng = np.random.default_rng([seed, 0])
    people = [draw_writer(style_rng, f"{prefix}{k + 1:03d}") for k in range(n_writers)]
    text_rng = random.Random(f"lines-{seed}" if texts == "grammar" else f"{texts}-lines-{seed}")
    records: list[dict[str, Any]] = []
    for i in range(n_lines):
        k, j = i % n_writers, i // n_writers  # writers take turns, so any prefix of lines has them all
        w = people[k]
        rng = np.random.default_rng([seed, 1, i])
        text = make_line(text_rng)
        origin = (float(rng.uniform(100, 400)), float(rng.uniform(600, 900)))
        strokes = write_line(text, fonts[w.font], w, rng, origin)
        name = f"lineStrokes/{w.id}/{w.id}-{j + 1:03d}.xml"
        (stage / name).parent.mkdir(parents=True, exist_ok=True)
        (stage / name).write_text(
            line_strokes_xml(strokes, w.id, text, f"{w.id}-{j + 1:03d}", 100.0 * i), encoding="utf-8"
        )
        records.append({"file": name, "writer": w.id, "text": text, "points": int(sum(len(s) for s in strokes))})
        bar.update(1)
    return people, records


# Output folder -----------------------------------------------------------------------------------


def _stage(out: Path) -> Path:
    """A fresh folder inside `out` to build in; `_publish` moves its results into place, so that an
    interrupted build never leaves a corpus that looks complete."""
    out.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=".partial-", dir=out))


def _publish(
    stage: Path, out: Path, data_dir: str, manifest: dict[str, Any], extra: tuple[str, ...] = (), stale: tuple = ()
) -> None:
    """Move stage's `data_dir`, manifest and `extra` files into `out`, replacing what was there, and remove `out`'s
    files named in `stale` that this build did not write."""
    (stage / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    for name in stale:
        if name not in extra and (out / name).is_file():
            (out / name).unlink()
    for name in (data_dir, "manifest.json", *extra):
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        (stage / name).rename(target)


def _bar(total: int, what: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=what, unit="item", disable=not enabled, file=sys.stderr)
