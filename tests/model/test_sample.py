"""`python -m model.sample`: WAV/SVG samples from checkpoints, the latent figure, and its errors."""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from modelkit import exploit_pickle
from tinyckpt import tiny_config, write_tiny_checkpoint

from model import ModelConfig, build_model, save_checkpoint
from model.render import wav_bytes
from model.sample import (
    SampleError,
    analyze_file,
    generate,
    load,
    main,
    numbered_paths,
    read_input,
    render_sample,
    steps_for,
)

ROOT = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"
SVG = "{http://www.w3.org/2000/svg}"


def small(modality: str, family: str = "vrnn") -> ModelConfig:
    return tiny_config(modality, family, output="gmm")


def write_checkpoint(path: Path, cfg: ModelConfig) -> Path:
    return write_tiny_checkpoint(path, cfg)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ckpts")
    return {
        "speech": write_checkpoint(d / "speech.safetensors", small("speech")),
        "handwriting": write_checkpoint(d / "hand.safetensors", small("handwriting")),
        "rnn": write_checkpoint(d / "rnn.safetensors", small("speech", family="rnn")),
    }


@pytest.fixture(scope="module")
def strokes_json(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("inputs") / "line.json"
    strokes = [[[10, 50], [14, 40], [20, 35], [26, 42]], [[40, 50], [44, 30]], [[60, 40], [66, 44], [70, 38]]]
    path.write_text(json.dumps(strokes))
    return path


def cli(*args: str | Path) -> subprocess.Popen:
    """Start `python -m model.sample ARGS` from the repository root (several may run at once)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    argv = [sys.executable, "-m", "model.sample", *map(str, args)]
    return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


# Command line, end to end ------------------------------------------------------------------------


def test_cli_end_to_end(ckpts, strokes_json, tmp_path):
    """One test starts the processes together so that their start-up costs overlap."""
    speech_a, speech_b = tmp_path / "a" / "speech.wav", tmp_path / "b" / "speech.wav"
    hand = tmp_path / "hand.svg"
    fig = tmp_path / "latent-hand.png"
    evil_dir = tmp_path / "evil"
    evil_dir.mkdir()
    shutil.copy(ckpts["speech"].with_suffix(".json"), evil_dir / "m.json")
    marker = evil_dir / "pwned"
    (evil_dir / "m.safetensors").write_bytes(exploit_pickle(marker))
    procs = {
        "a": cli(ckpts["speech"], "--out", speech_a, "--num", "2", "--seconds", "0.5", "--seed", "7"),
        "b": cli(ckpts["speech"], "--out", speech_b, "--num", "2", "--seconds", "0.5", "--seed", "7"),
        "hand": cli(ckpts["handwriting"], "--out", hand, "--steps", "60", "--seed", "1", "--device", "cpu"),
        "analyze": cli(ckpts["handwriting"], "--analyze", strokes_json, "--out", fig),
        "evil": cli(evil_dir / "m.safetensors", "--out", tmp_path / "x.wav"),
    }
    res = {k: finish(p) for k, p in procs.items()}

    for key in ("a", "b", "hand", "analyze"):
        assert res[key][0] == 0, res[key][2]
    # Speech: two WAV files named stem_0, stem_1, 0.5 s each, 16-bit PCM at the model's rate.
    for i in range(2):
        info = sf.info(speech_a.with_name(f"speech_{i}.wav"))
        assert (info.samplerate, info.channels, info.frames, info.subtype) == (16000, 1, 8000, "PCM_16")
        assert speech_a.with_name(f"speech_{i}.wav").read_bytes() == speech_b.with_name(f"speech_{i}.wav").read_bytes()
    assert speech_a.with_name("speech_0.wav").read_bytes() != speech_a.with_name("speech_1.wav").read_bytes()
    assert not speech_a.exists()
    out = res["a"][1]
    assert "speech_0.wav" in out and "speech_1.wav" in out and "a sample (not the decoder mean)" in out
    assert "seed 7" in out
    # Handwriting: one SVG with one path per stroke.
    root = ET.parse(hand).getroot()
    assert root.tag == f"{SVG}svg" and root.findall(f".//{SVG}path")
    assert "60 pen steps" in res["hand"][1]
    # The latent figure of a JSON strokes file.
    assert fig.read_bytes()[:8] == PNG and fig.stat().st_size > 10_000
    assert "latent analysis" in res["analyze"][1]
    # A pickle renamed .safetensors: exit 2, a message naming the file, no traceback, nothing run.
    code, _, err = res["evil"]
    assert code == 2 and "m.safetensors" in err and "Traceback" not in err
    assert not marker.exists()


# Command line, in process ------------------------------------------------------------------------


def run_main(capsys, *args: str | Path) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:  # argparse's errors and --help
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_analyze_a_generated_wav(ckpts, tmp_path, capsys):
    wav = tmp_path / "in.wav"
    code, _, err = run_main(capsys, ckpts["speech"], "--out", wav, "--steps", "30", "--seed", "0")
    assert code == 0, err
    fig = tmp_path / "fig.png"
    code, out, err = run_main(capsys, ckpts["speech"], "--analyze", wav, "--out", fig)
    assert code == 0, err
    assert fig.read_bytes()[:8] == PNG and fig.stat().st_size > 10_000
    assert "30 frames" in out
    first = fig.read_bytes()
    assert run_main(capsys, ckpts["speech"], "--analyze", wav, "--out", fig)[0] == 0
    assert fig.read_bytes() == first  # the analysis uses posterior means: deterministic


def test_mean_prime_and_json_output(ckpts, tmp_path, capsys, strokes_json):
    code, out, err = run_main(capsys, ckpts["speech"], "--out", tmp_path / "m.wav", "--steps", "5", "--mean")
    assert code == 0, err
    assert "the decoder mean" in out and sf.info(tmp_path / "m.wav").frames == 1000
    prime = tmp_path / "prime.wav"
    prime.write_bytes(wav_bytes(0.1 * np.sin(np.arange(1000) / 5), 16000))
    code, out, err = run_main(capsys, ckpts["speech"], "--out", tmp_path / "c.wav", "--steps", "4", "--prime", prime)
    assert code == 0 and "continuing" in out and sf.info(tmp_path / "c.wav").frames == 800
    code, _, err = run_main(
        capsys, ckpts["handwriting"], "--out", tmp_path / "h", "--steps", "9", "--prime", strokes_json, "--seed", "2"
    )
    assert code == 0, err
    assert ET.parse(tmp_path / "h.svg").getroot().tag == f"{SVG}svg"  # no suffix: .svg is added
    code, _, err = run_main(capsys, ckpts["handwriting"], "--out", tmp_path / "h.json", "--steps", "9", "--bias", "1")
    rows = json.loads((tmp_path / "h.json").read_text())
    assert code == 0 and len(rows) == 9 and all(len(r) == 3 and r[2] in (0, 1) for r in rows)


@pytest.mark.parametrize(
    ("which", "extra", "message"),
    [
        ("missing", [], "no such checkpoint"),
        ("rnn", ["--analyze", "INPUT"], "no latent variables"),
        ("speech", ["--analyze", "nope.wav"], "nope.wav: no such file"),
        ("speech", ["--analyze", "INPUT", "--seed", "0"], "takes no sampling options"),
        ("speech", ["--seconds", "-1"], "--seconds"),
        ("speech", ["--seconds", "1", "--steps", "4"], "not allowed with argument"),
        ("speech", ["--num", "0"], "--num"),
        ("speech", ["--temperature", "nan"], "--temperature"),
        ("speech", ["--out", "x.svg"], "written as .wav"),
        ("handwriting", ["--seconds", "1"], "--steps for handwriting"),
        ("speech", ["--prime", "PICKLE"], "not a readable audio file"),
        ("handwriting", ["--analyze", "PICKLE"], "not IAM-OnDB XML"),
        ("speech", ["--device", "tpu"], "invalid choice"),
        ("speech", ["--out"], "expected one argument"),
        ("nometa", [], "no 'normalisation' stats"),
    ],
)
def test_bad_arguments_and_files_exit_2_with_a_message(ckpts, tmp_path, capsys, which, extra, message):
    wav = tmp_path / "in.wav"
    wav.write_bytes(wav_bytes(np.zeros(2000), 16000))
    junk = tmp_path / "junk.bin"
    junk.write_bytes(pickle.dumps([1, 2, 3]))
    if which == "missing":
        ckpt = tmp_path / "nothing.safetensors"
    elif which == "nometa":
        ckpt = save_checkpoint(build_model(small("speech")), tmp_path / "bare.safetensors")
    else:
        ckpt = ckpts[which]
    extra = [{"INPUT": str(wav), "PICKLE": str(junk), "nope.wav": str(tmp_path / "nope.wav")}.get(a, a) for a in extra]
    out_args = [] if "--out" in extra else ["--out", str(tmp_path / ("o.png" if "--analyze" in extra else "o"))]
    code, out, err = run_main(capsys, ckpt, *out_args, *extra)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert out == ""


def test_help_explains_with_examples(capsys):
    code, out, _ = run_main(capsys, "--help")
    assert code == 0
    for text in ("--analyze", "--mean", "--prime", "examples:", "decoder mean", "stem"):
        assert text in out


# The reusable core -------------------------------------------------------------------------------


def test_steps_for_defaults_and_rounding(ckpts):
    _, speech = load(ckpts["speech"])
    _, hand = load(ckpts["handwriting"])
    assert steps_for(speech) == 160  # 2.0 s of 200-sample frames at 16 kHz
    assert steps_for(speech, seconds=0.01) == 1 and steps_for(speech, seconds=0.0126) == 2
    assert steps_for(hand) == 700 and steps_for(hand, steps=12) == 12
    with pytest.raises(SampleError, match="speech"):
        steps_for(hand, seconds=1.0)
    with pytest.raises(SampleError, match="steps"):
        steps_for(speech, steps=0)


def test_generate_returns_raw_arrays_reproducibly(ckpts):
    model, meta = load(ckpts["handwriting"])
    a = generate(model, meta, num=3, steps=20, seed=5)
    b = generate(model, meta, num=3, steps=20, seed=5)
    assert len(a) == 3 and all(x.shape == (20, 3) and x.dtype == np.float32 for x in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert set(np.unique(np.concatenate(a)[:, 2])) <= {0.0, 1.0}
    assert isinstance(render_sample(meta, a[0]), str)
    with pytest.raises(SampleError, match="temperature"):
        generate(model, meta, steps=2, temperature=0.0)
    with pytest.raises(SampleError, match="num"):
        generate(model, meta, num=0)


def test_generated_speech_is_in_raw_units(ckpts):
    model, meta = load(ckpts["speech"])
    (x,) = generate(model, meta, steps=10, seed=0)
    assert x.shape == (10, 200)
    # A fresh model predicts about unit variance in normalised space; the stats' std is 0.1.
    assert 0.02 < float(x.std()) < 0.5
    wav = render_sample(meta, x)
    assert sf.info(io.BytesIO(wav)).frames == 2000


def test_analyze_file_takes_paths_and_bytes(ckpts, strokes_json):
    model, meta = load(ckpts["handwriting"])
    an, x_raw = analyze_file(model, meta, strokes_json)
    an2, x_raw2 = analyze_file(model, meta, strokes_json.read_bytes(), name="upload")
    assert x_raw.shape == (9, 3) and np.array_equal(x_raw, x_raw2)
    assert torch.equal(an.kl, an2.kl) and an.kl.shape == (1, 9)
    assert read_input(meta, strokes_json).shape == (9, 3)
    rnn, rmeta = load(ckpts["rnn"])
    with pytest.raises(SampleError, match="RNN-GMM has no latent variables"):
        analyze_file(rnn, rmeta, b"")


def test_numbered_paths():
    assert numbered_paths(Path("d/x.wav"), 1) == [Path("d/x.wav")]
    assert numbered_paths(Path("d/x.wav"), 3) == [Path("d/x_0.wav"), Path("d/x_1.wav"), Path("d/x_2.wav")]
