"""Rendering: WAV bytes parse back, SVGs are valid and safe, figures are PNGs of a sensible size."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from model import ModelConfig, build_model
from model.render import (
    check_colour,
    handwriting_figure,
    handwriting_lines_svg,
    handwriting_svg,
    latent_figure,
    wav_bytes,
    waveforms_figure,
)

SVG = "{http://www.w3.org/2000/svg}"
ROOT = Path(__file__).resolve().parents[2]


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, after checking the signature."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def offsets(strokes: list[list[tuple[float, float]]]) -> np.ndarray:
    """Strokes of absolute (x, y) points, y up -> (T, 3) offsets with pen = 1 on each stroke's last point."""
    pts = np.concatenate([np.asarray(s, dtype=np.float64) for s in strokes])
    out = np.zeros((len(pts), 3))
    out[1:, :2] = np.diff(pts, axis=0)
    out[np.cumsum([len(s) for s in strokes]) - 1, 2] = 1
    out[0, :2] = pts[0]
    return out


# WAV ---------------------------------------------------------------------------------------------


def test_wav_bytes_are_16_bit_pcm_mono_at_the_given_rate():
    wave = 0.5 * np.sin(np.linspace(0, 200, 16000)).astype(np.float32)
    data = wav_bytes(wave, 16000)
    info = sf.info(io.BytesIO(data))
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (16000, 1, 16000, "PCM_16")
    back, rate = sf.read(io.BytesIO(data), dtype="float32")
    assert rate == 16000
    np.testing.assert_allclose(back, wave, atol=1 / 32767)


def test_wav_bytes_clip_map_nan_to_silence_and_flatten_frames():
    frames = np.array([[0.0, 2.0, -3.0, np.nan], [np.inf, -np.inf, 0.25, -1.0]])
    back, rate = sf.read(io.BytesIO(wav_bytes(frames, 8000)), dtype="int16")
    assert rate == 8000
    assert back.tolist() == [0, 32767, -32767, 0, 32767, -32767, round(0.25 * 32767), -32767]


def test_wav_bytes_are_deterministic_and_accept_tensors_and_empty_input():
    wave = torch.linspace(-1, 1, 400)
    assert wav_bytes(wave, 16000) == wav_bytes(wave.numpy(), 16000)
    assert sf.info(io.BytesIO(wav_bytes(np.zeros(0), 16000))).frames == 0


@pytest.mark.parametrize("rate", [0, -16000, 16000.0, True, "16000"])
def test_wav_bytes_refuse_a_bad_sample_rate(rate):
    with pytest.raises(ValueError, match="sample_rate"):
        wav_bytes(np.zeros(10), rate)


# SVG ---------------------------------------------------------------------------------------------


def parse_svg(text: str) -> ET.Element:
    root = ET.fromstring(text.encode("utf-8"))
    assert root.tag == f"{SVG}svg"
    return root


def path_points(d: str) -> list[tuple[float, float]]:
    nums = [float(v) for v in d.replace("M", " ").replace("L", " ").replace("h0", " ").split()]
    return list(zip(nums[::2], nums[1::2], strict=True))


def test_svg_has_one_path_per_stroke_inside_its_viewbox():
    x = offsets([[(0, 0), (10, 5), (20, 0)], [(30, 0), (30, 40)], [(50, 10)]])
    root = parse_svg(handwriting_svg(x, padding=10, stroke_width=2))
    paths = root.findall(f".//{SVG}path")
    assert len(paths) == 3
    vx, vy, vw, vh = (float(v) for v in root.attrib["viewBox"].split())
    assert (vx, vy) == (0, 0)
    # The ink spans 50 x 40 units; padding 10 and half the stroke width on each side.
    assert vw == pytest.approx(50 + 2 * 11) and vh == pytest.approx(40 + 2 * 11)
    assert float(root.attrib["width"]) == pytest.approx(vw)
    for p in paths:
        for px, py in path_points(p.attrib["d"]):
            assert 0 <= px <= vw and 0 <= py <= vh
    assert paths[2].attrib["d"].endswith("h0")  # a one-point stroke is drawn as a dot


def test_lines_svg_stacks_lines_one_under_another_at_the_left_edge():
    first = offsets([[(5, 0), (25, 10)], [(30, 0), (30, 10)]])  # 25 x 10 units of ink, starting at x = 5
    second = offsets([[(100, 50), (140, 70)]])  # 40 x 20, starting far to the right and up
    root = parse_svg(handwriting_lines_svg([first, second], line_gap=5, padding=0, stroke_width=1))
    paths = root.findall(f".//{SVG}path")
    assert len(paths) == 3  # each line's strokes, the last stroke of a line never joined to the next line
    (a, b), (c, d), (e, f) = (path_points(p.attrib["d"]) for p in paths)
    _, _, vw, vh = (float(v) for v in root.attrib["viewBox"].split())
    m = 0.5  # half the stroke width
    assert vw == pytest.approx(40 + 2 * m) and vh == pytest.approx(10 + 5 + 20 + 2 * m)
    assert a == pytest.approx((m, 10 + m)) and b == pytest.approx((20 + m, m))  # the first line at the top left
    assert c == pytest.approx((25 + m, 10 + m)) and d == pytest.approx((25 + m, m))
    assert e == pytest.approx((m, 35 + m)) and f == pytest.approx((40 + m, 15 + m))  # 5 units below, at the left
    # One line is handwriting_svg's picture; the default gap is half the tallest line's height.
    assert handwriting_lines_svg([first], stroke_width=3) == handwriting_svg(first, stroke_width=3)
    default = parse_svg(handwriting_lines_svg([first, second], padding=0, stroke_width=1))
    assert float(default.attrib["viewBox"].split()[3]) == pytest.approx(10 + 10 + 20 + 2 * m)
    with pytest.raises(ValueError, match="at least one line"):
        handwriting_lines_svg([])
    with pytest.raises(ValueError, match="line_gap"):
        handwriting_lines_svg([first, second], line_gap=-1)


def test_svg_flips_y_so_that_up_is_up():
    up = offsets([[(0, 0), (0, 100)]])  # a stroke drawn upwards (y up in the data)
    (p,) = parse_svg(handwriting_svg(up)).findall(f".//{SVG}path")
    (x0, y0), (x1, y1) = path_points(p.attrib["d"])
    assert x0 == x1 and y1 < y0  # SVG's y grows downwards


def test_svg_width_scales_the_drawing_and_keeps_the_stroke_width_in_pixels():
    x = offsets([[(0, 0), (1000, 0), (1000, 250)]])
    root = parse_svg(handwriting_svg(x, width=400, stroke_width=3, padding=0))
    vw, vh = (float(v) for v in root.attrib["viewBox"].split()[2:])
    w, h = float(root.attrib["width"]), float(root.attrib["height"])
    assert w == 400 and h == pytest.approx(400 * vh / vw, rel=1e-3)
    stroke = float(root.find(f"{SVG}g").attrib["stroke-width"])
    assert stroke * w / vw == pytest.approx(3, rel=1e-2)


@pytest.mark.parametrize("x", [np.zeros((0, 3)), np.array([[5.0, 5.0, 1.0]]), np.zeros((4, 3))])
def test_empty_or_degenerate_input_gives_a_valid_svg(x):
    root = parse_svg(handwriting_svg(x))
    vw, vh = (float(v) for v in root.attrib["viewBox"].split()[2:])
    assert vw > 0 and vh > 0
    assert len(root.findall(f".//{SVG}path")) == (0 if len(x) == 0 else 1)


@pytest.mark.parametrize("good", ["#abc", "#1A1A1A", "navy", "Black", " red "])
def test_hex_and_named_colours_are_accepted(good):
    root = parse_svg(handwriting_svg(offsets([[(0, 0), (1, 1)]]), color=good))
    assert root.find(f"{SVG}g").attrib["stroke"] == check_colour(good)


@pytest.mark.parametrize(
    "bad", ['red"/><script>alert(1)</script>', "url(#x)", "#12", "#abcdeg", "red;", "rgb(0,0,0)", "", "chartreuse1"]
)
def test_other_colours_are_refused_with_a_clear_message(bad):
    with pytest.raises(ValueError, match=r"#rgb or #rrggbb"):
        handwriting_svg(offsets([[(0, 0), (1, 1)]]), color=bad)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(offsets_raw=np.zeros((4, 2))), r"\(T, 3\)"),
        (dict(offsets_raw=np.array([[0, 0, 0], [np.nan, 1, 1]])), "non-finite"),
        (dict(offsets_raw=np.zeros((2, 3)), stroke_width=0), "stroke_width"),
        (dict(offsets_raw=np.zeros((2, 3)), stroke_width=float("inf")), "stroke_width"),
        (dict(offsets_raw=np.zeros((2, 3)), width=-5), "width"),
        (dict(offsets_raw=np.zeros((2, 3)), padding=-1), "padding"),
    ],
)
def test_bad_svg_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        handwriting_svg(**kwargs)


# Figures -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def speech_analysis():
    torch.manual_seed(0)
    cfg = ModelConfig(x_dim=200, z_dim=6, h_dim=12, mlp_layers=1, mlp_width=12, n_components=2)
    model = build_model(cfg).eval()
    x = torch.randn(2, 12, 200)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[1, 5:] = False
    x[1, 5:] = float("nan")  # padding may hold anything
    return model.analyze(x, mask), (x * 0.1).numpy()


@pytest.fixture(scope="module")
def handwriting_analysis():
    torch.manual_seed(0)
    cfg = ModelConfig(x_dim=3, z_dim=5, h_dim=12, mlp_layers=1, mlp_width=12, n_components=2, modality="handwriting")
    x = offsets([[(0, 0), (3, 4), (6, 2), (8, 5)], [(12, 0), (14, 6)], [(18, 3)]])
    an = build_model(cfg).eval().analyze(torch.as_tensor(x, dtype=torch.float32).unsqueeze(0) / 3)
    return an, x


def test_latent_figure_of_speech_is_a_png(speech_analysis):
    an, x = speech_analysis
    w, h = png_size(latent_figure(an, x[0], "speech", sample_rate=16000, title="VRNN-Gauss: test"))
    assert 600 < w < 2000 and 400 < h < 1500


def test_latent_figure_honours_the_mask_and_takes_the_padded_batch(speech_analysis):
    an, x = speech_analysis
    png = latent_figure(an, x, "speech", index=1)  # row 1 has 5 valid steps and NaN padding
    assert len(png) > 10_000
    # The same figure as row 1 alone, cut to its 5 valid steps: nothing of the padding shows.
    L = int(an.mask[1].sum())
    assert L == 5
    alone = type(an)(an.kl[1:, :L], an.kl_per_dim[1:, :L], an.delta_mu[1:, :L], an.mu_z[1:, :L], an.mask[1:, :L])
    assert latent_figure(alone, x[1, :L], "speech") == png
    # ... and the mask is what cuts it: the padded steps made valid draw another figure (the row's analysis
    # values there are finite; its input there is replaced by zeros, as the NaN could not be drawn).
    unmasked = type(an)(an.kl, an.kl_per_dim, an.delta_mu, an.mu_z, torch.ones_like(an.mask))
    assert latent_figure(unmasked, np.nan_to_num(x), "speech", index=1) != png
    with pytest.raises(ValueError, match="T >= 12"):
        latent_figure(an, x[0, :6], "speech")


def test_latent_figure_of_one_step_and_of_no_step(speech_analysis):
    an, x = speech_analysis
    mask = torch.zeros_like(an.mask)
    mask[0, 0] = 1
    one = type(an)(an.kl, an.kl_per_dim, an.delta_mu, an.mu_z, mask)
    assert png_size(latent_figure(one, x[0, :1], "speech"))[0] > 0
    with pytest.raises(ValueError, match="no valid time steps"):
        latent_figure(type(an)(an.kl, an.kl_per_dim, an.delta_mu, an.mu_z, torch.zeros_like(mask)), x[0], "speech")


def test_latent_figure_of_handwriting_is_a_png(handwriting_analysis):
    an, x = handwriting_analysis
    w, h = png_size(latent_figure(an, x, "handwriting"))
    assert 600 < w < 2000 and 400 < h < 1500
    with pytest.raises(ValueError, match="modality"):
        latent_figure(an, x, "video")


def test_waveforms_figure_takes_models_with_different_numbers_of_waves():
    rng = np.random.default_rng(0)
    waves = {
        "training examples": [0.3 * rng.standard_normal(3200), 0.1 * rng.standard_normal((16, 200))],
        "RNN-GMM": [rng.standard_normal(100)],  # shorter than the zoom window
        "VRNN-Gauss": [np.zeros(800), rng.standard_normal(800), rng.standard_normal(800), rng.standard_normal(800)],
    }
    png = waveforms_figure(waves, 16000)
    w, h = png_size(png)
    assert 800 < w < 3000 and 300 < h < 1500 and len(png) > 20_000
    with pytest.raises(ValueError, match="non-empty"):
        waveforms_figure({}, 16000)
    with pytest.raises(ValueError, match="sample_rate"):
        waveforms_figure(waves, 0)


def test_handwriting_figure_takes_lines_and_degenerate_samples():
    line = offsets([[(0, 0), (5, 8), (10, 0)], [(15, 0), (20, 8), (25, 0), (30, 4)]])
    samples = {"training examples": [line, line], "VRNN-GMM": [line, np.array([[0.0, 0.0, 1.0]]), np.zeros((3, 3))]}
    w, h = png_size(handwriting_figure(samples))
    assert 600 < w < 1500 and 300 < h < 1500
    with pytest.raises(ValueError, match=r"\(T, 3\)"):
        handwriting_figure({"bad": [np.zeros((4, 2))]})


def test_rendering_uses_no_pyplot_and_imports_matplotlib_lazily():
    code = (
        "import sys, numpy as np\n"
        "import model.render as r\n"
        "assert 'matplotlib' not in sys.modules\n"
        "r.handwriting_figure({'a': [np.array([[0., 0., 0.], [1., 1., 1.]])]})\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)
