"""Text-to-speech through Debian's festival (HTS voice cmu_us_slt_arctic_hts) or espeak-ng.

Both are called as programs; each call writes WAV files at the synthesiser's own rate, which the
caller resamples. Nothing here downloads anything.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from . import defaults

SYNTHESISERS = ("festival", "espeak-ng")
INSTALL_HINT = (
    "install the Debian packages festival and festvox-us-slt-hts "
    "(apt-get install festival festvox-us-slt-hts), or espeak-ng as a fallback (apt-get install espeak-ng)"
)


class SynthesiserError(RuntimeError):
    """No usable synthesiser, or a synthesiser that failed; the message says what to install or what broke."""


def festival_has_voice(voice: str = defaults.FESTIVAL_VOICE) -> bool:
    """True when the `festival` program exists and lists `voice` among its voices."""
    exe = shutil.which("festival")
    if exe is None:
        return False
    script = f'(print (member_string "{voice}" (voice.list)))'
    try:
        out = subprocess.run(
            [exe, "--pipe"], input=script, capture_output=True, text=True, timeout=60, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return voice in out


def choose_synthesiser(preference: str = "auto", voice: str = defaults.FESTIVAL_VOICE) -> str:
    """'festival' or 'espeak-ng' (the first usable when preference is 'auto'), else SynthesiserError."""
    if preference not in ("auto", *SYNTHESISERS):
        raise SynthesiserError(f"unknown synthesiser {preference!r}; expected auto, festival or espeak-ng")
    if preference in ("auto", "festival"):
        if festival_has_voice(voice):
            return "festival"
        if preference == "festival":
            what = (
                "festival is not installed" if shutil.which("festival") is None else f"festival lacks the {voice} voice"
            )
            raise SynthesiserError(f"{what}: apt-get install festival festvox-us-slt-hts")
    if shutil.which("espeak-ng") is not None:
        return "espeak-ng"
    if preference == "espeak-ng":
        raise SynthesiserError("espeak-ng is not installed: apt-get install espeak-ng")
    raise SynthesiserError(f"no speech synthesiser found: {INSTALL_HINT}")


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def synthesise(
    texts: list[str], paths: list[Path], synthesiser: str, voice: str = defaults.FESTIVAL_VOICE, timeout: float = 600
) -> None:
    """Speak texts[i] into the WAV file paths[i] (the synthesiser's native rate), in one process for
    festival (its start-up costs more than a sentence), one call per text for espeak-ng."""
    if synthesiser == "festival":
        lines = [f"(voice_{voice})"]
        for text, path in zip(texts, paths, strict=True):
            lines.append(f"(utt.save.wave (SynthText {_scheme_string(text)}) {_scheme_string(str(path))} 'riff)")
        _run(["festival", "--pipe"], "\n".join(lines) + "\n", timeout)
    elif synthesiser == "espeak-ng":
        for text, path in zip(texts, paths, strict=True):
            _run(["espeak-ng", "-v", "en-us", "-w", str(path), text], None, timeout)
    else:
        raise SynthesiserError(f"unknown synthesiser {synthesiser!r}")
    missing = [str(p) for p in paths if not Path(p).is_file() or Path(p).stat().st_size == 0]
    if missing:
        raise SynthesiserError(f"{synthesiser} wrote no audio for {len(missing)} sentences (first: {missing[0]})")


def _run(cmd: list[str], stdin: str | None, timeout: float) -> None:
    try:
        proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise SynthesiserError(f"{cmd[0]} is not installed: {INSTALL_HINT}") from None
    except subprocess.TimeoutExpired:
        raise SynthesiserError(f"{cmd[0]} did not finish within {timeout:g} s") from None
    err = (proc.stderr or "").strip()
    if proc.returncode != 0 or "SIOD ERROR" in err:
        raise SynthesiserError(f"{cmd[0]} failed (exit code {proc.returncode}): {err[-500:] or 'no message'}")
