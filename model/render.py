"""Rendering: speech as WAV bytes, handwriting as SVG text, and the paper's figures as PNG bytes.

    wav = wav_bytes(wave, 16000)                              # 16-bit PCM mono WAV
    svg = handwriting_svg(offsets)                            # standalone SVG, one <path> per stroke
    png = latent_figure(analysis, x_raw, "speech")            # Figure 2: delta_t, KL, input
    png = waveforms_figure({"training examples": [...], "VRNN-GMM": [...]}, 16000)   # Figure 3
    png = handwriting_figure({"training examples": [...], "VRNN-GMM": [...]})        # Figure 4

Every function is pure: inputs in, bytes or text out. Inputs are in the raw data space (waveform
samples as floats in [-1, 1]; handwriting offsets (dx, dy, pen) with y up, pen = 1 on the last point
of each stroke). Matplotlib is imported only inside the figure functions and used through its
object-oriented API on the Agg canvas: no pyplot, no global figure state, nothing left open.
"""

from __future__ import annotations

import io
import math
import re
import wave as _wave
from typing import Any

import numpy as np

from .data.handwriting import offsets_to_strokes

# Colours an SVG may be drawn in: #rgb, #rrggbb, or one of these CSS names. Anything else is refused,
# so a caller-supplied colour can never close the attribute and inject markup.
CSS_COLOURS = frozenset(
    {
        "black",
        "white",
        "gray",
        "grey",
        "dimgray",
        "darkgray",
        "silver",
        "red",
        "darkred",
        "maroon",
        "crimson",
        "orange",
        "gold",
        "green",
        "darkgreen",
        "teal",
        "blue",
        "darkblue",
        "navy",
        "royalblue",
        "steelblue",
        "purple",
        "indigo",
        "brown",
    }
)
_HEX_COLOUR = re.compile(r"#(?:[0-9a-fA-F]{3}){1,2}")

MAX_STROKE_WIDTH = 100.0
ZOOM_SECONDS = 0.05  # the zoomed-in window of `waveforms_figure` (the paper's Figure 3, bottom rows)
MAX_EXAMPLES = 3  # examples per model shown by the comparison figures
MAX_KL_DIMS = 64  # latent dimensions shown (those with the most KL) by `latent_figure`
_DPI = 110
_TRAINING_COLOUR = "#333333"
_MODEL_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


# WAV ---------------------------------------------------------------------------------------------


def wav_bytes(wave: np.ndarray, sample_rate: int) -> bytes:
    """A mono waveform (floats, nominally in [-1, 1]) -> 16-bit PCM WAV file bytes.

    Values are clipped to [-1, 1]; NaN becomes 0 (silence), +-inf the nearest full scale. A 2-D input
    (frames, frame_size) is flattened in order, which is how speech frames join into a waveform."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | np.integer) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer (Hz), got {sample_rate!r}")
    x = _numpy(wave).astype(np.float64, copy=False).reshape(-1)
    x = np.clip(np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0)
    pcm = np.rint(x * 32767.0).astype("<i2")
    buf = io.BytesIO()
    with _wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


# SVG ---------------------------------------------------------------------------------------------


def check_colour(color: str) -> str:
    """`color` as it will be written into SVG: #rgb / #rrggbb (lower-cased) or a known CSS name.

    Raises ValueError for anything else (which also rules out markup injection through the colour)."""
    if not isinstance(color, str):
        raise ValueError(f"color must be a string such as '#1a1a1a' or 'navy', got {type(color).__name__}")
    c = color.strip()
    if _HEX_COLOUR.fullmatch(c) or c.lower() in CSS_COLOURS:
        return c.lower()
    shown = color if len(color) <= 40 else color[:40] + "..."
    raise ValueError(
        f"color {shown!r} is not allowed: use #rgb or #rrggbb hex (e.g. '#1a1a1a') "
        f"or one of the names {', '.join(sorted(CSS_COLOURS))}"
    )


def _positive(name: str, value: Any, upper: float | None = None, allow_zero: bool = False) -> float:
    ok = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
    v = float(value) if ok else math.nan
    if not (math.isfinite(v) and (v >= 0 if allow_zero else v > 0) and (upper is None or v <= upper)):
        need = ">= 0" if allow_zero else "> 0"
        limit = f" and <= {upper:g}" if upper is not None else ""
        raise ValueError(f"{name} must be a finite number {need}{limit}, got {value!r}")
    return v


def _check_offsets(offsets_raw: Any) -> np.ndarray:
    x = _numpy(offsets_raw).astype(np.float64, copy=False)
    if x.ndim != 2 or x.shape[1] != 3:
        raise ValueError(f"handwriting offsets must have shape (T, 3) holding (dx, dy, pen), got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("handwriting offsets contain non-finite values (NaN or inf)")
    return x


def _trim(s: str) -> str:
    """A fixed-point number without trailing zeros ("12.50" -> "12.5", "-0.00" -> "0")."""
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def handwriting_svg(
    offsets_raw: np.ndarray,
    stroke_width: float = 2.0,
    color: str = "#1a1a1a",
    width: float | None = None,
    padding: float = 10,
) -> str:
    """Raw pen offsets (T, 3) = (dx, dy, pen), y up -> a standalone SVG document (text).

    One <path> per stroke (a stroke ends at a point whose pen bit is 1), drawn with round caps and
    joins; a one-point stroke is a dot. The viewBox is fitted to the ink plus `padding` (in output
    pixels) on every side, with y flipped for SVG's y-down axis. `width` (pixels) scales the drawing,
    the height following the aspect ratio; None keeps the data's own units (1 unit = 1 pixel).
    `stroke_width` is in output pixels either way. An empty input gives a valid, empty SVG."""
    x = _check_offsets(offsets_raw)
    colour = check_colour(color)
    sw_px = _positive("stroke_width", stroke_width, MAX_STROKE_WIDTH)
    pad_px = _positive("padding", padding, allow_zero=True)
    width_px = None if width is None else _positive("width", width, 100_000)

    strokes = offsets_to_strokes(x) if len(x) else []
    points = np.concatenate(strokes) if strokes else np.zeros((0, 2))
    if len(points):
        lo, hi = points.min(axis=0), points.max(axis=0)
    else:
        lo = hi = np.zeros(2)
    ink_w, ink_h = float(hi[0] - lo[0]), float(hi[1] - lo[1])
    # Data units per output pixel: 1 unless a width is asked for; a degenerate (dot or empty)
    # drawing keeps scale 1 so that the padding still gives it a size.
    scale = 1.0
    if width_px is not None and ink_w > 0:
        room = width_px - 2 * pad_px - sw_px  # pixels left for the ink itself
        scale = ink_w / room if room > 0 else ink_w / width_px
    pad, sw = pad_px * scale, sw_px * scale
    margin = pad + sw / 2
    vb_w, vb_h = ink_w + 2 * margin, ink_h + 2 * margin
    extent = max(vb_w, vb_h)
    decimals = int(min(6, max(0, 4 - math.floor(math.log10(extent))))) if extent > 0 else 2

    def fmt(v: float) -> str:
        return _trim(f"{v:.{decimals}f}")

    paths = []
    for s in strokes:
        # Shift so the ink starts at `margin`, flip y (SVG's y grows downwards).
        px = s[:, 0] - lo[0] + margin
        py = hi[1] - s[:, 1] + margin
        d = f"M{fmt(px[0])} {fmt(py[0])}"
        if len(s) == 1:
            d += "h0"  # zero-length segment: drawn as a dot by the round cap
        else:
            d += "L" + " ".join(f"{fmt(a)} {fmt(b)}" for a, b in zip(px[1:], py[1:], strict=True))
        paths.append(f'<path d="{d}"/>')

    out_w = width_px if width_px is not None else vb_w
    out_h = vb_h * (out_w / vb_w) if vb_w > 0 else vb_h
    size_w, size_h = _trim(f"{out_w:.2f}"), _trim(f"{out_h:.2f}")
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{size_w}" height="{size_h}" '
        f'viewBox="0 0 {fmt(vb_w)} {fmt(vb_h)}">'
    )
    group = f'<g fill="none" stroke="{colour}" stroke-width="{fmt(sw)}" stroke-linecap="round" stroke-linejoin="round">'
    return "\n".join(['<?xml version="1.0" encoding="UTF-8"?>', head, group, *paths, "</g>", "</svg>", ""])


def handwriting_lines_svg(
    lines_raw: list[np.ndarray],
    stroke_width: float = 2.0,
    color: str = "#1a1a1a",
    line_gap: float | None = None,
    width: float | None = None,
    padding: float = 10,
) -> str:
    """Several lines of raw pen offsets (each (T_i, 3) = (dx, dy, pen), y up) -> one SVG document with the lines one
    under another, each starting at the left edge, `line_gap` data units apart (None: half the tallest line's ink
    height, at least 1 unit). Each line is drawn as `handwriting_svg` draws one (a line's last stroke ends with it);
    the options are its. One line gives the same picture as `handwriting_svg`."""
    if not isinstance(lines_raw, list | tuple) or not lines_raw:
        raise ValueError("give at least one line of handwriting offsets")
    placed = []
    for raw in lines_raw:
        x = _check_offsets(raw)
        xy = np.cumsum(x[:, :2], axis=0) if len(x) else np.zeros((0, 2))
        lo = xy.min(axis=0) if len(xy) else np.zeros(2)
        hi = xy.max(axis=0) if len(xy) else np.zeros(2)
        placed.append((x, xy, lo, hi))
    if line_gap is None:
        line_gap = max(1.0, 0.5 * max(float(hi[1] - lo[1]) for _, _, lo, hi in placed))
    gap = _positive("line_gap", line_gap, allow_zero=True)
    if len(placed) == 1:
        return handwriting_svg(placed[0][0], stroke_width=stroke_width, color=color, width=width, padding=padding)
    points, pens, top = [], [], 0.0
    for x, xy, lo, hi in placed:
        if not len(x):
            top -= gap
            continue
        # Left edge at x = 0, the top of the ink `gap` below the previous line's bottom (y up).
        points.append(xy - np.array([lo[0], hi[1] - top]))
        pen = (x[:, 2] > 0.5).astype(np.float64)
        pen[-1] = 1.0  # the line's last stroke ends with it
        pens.append(pen)
        top -= float(hi[1] - lo[1]) + gap
    if not points:
        return handwriting_svg(np.zeros((0, 3)), stroke_width=stroke_width, color=color, width=width, padding=padding)
    xy_all = np.concatenate(points)
    offsets = np.column_stack([np.diff(xy_all, axis=0, prepend=np.zeros((1, 2))), np.concatenate(pens)])
    return handwriting_svg(offsets, stroke_width=stroke_width, color=color, width=width, padding=padding)


# Figures -----------------------------------------------------------------------------------------


def _numpy(a: Any) -> np.ndarray:
    """A NumPy array from an array, a list or a torch tensor (detached, on the CPU)."""
    if hasattr(a, "detach"):
        a = a.detach().to("cpu")
        return (a.double() if a.is_floating_point() else a).numpy()
    return np.asarray(a)


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, facecolor="white", metadata={"Software": None})
    fig.clear()
    return buf.getvalue()


def _style(ax) -> None:
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.25, linewidth=0.6)


def _short_numbers():
    """Tick labels as short numbers (1e-06, 0.25, 40) with no offset text above the axis."""
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _: f"{v:.3g}")


def _draw_strokes(ax, offsets: np.ndarray, colour: str, linewidth: float = 1.2, anchor: str = "C") -> None:
    strokes = offsets_to_strokes(offsets) if len(offsets) else []
    for s in strokes:
        if len(s) == 1:
            ax.plot(s[:, 0], s[:, 1], ".", color=colour, markersize=linewidth * 2)
        else:
            ax.plot(s[:, 0], s[:, 1], "-", color=colour, linewidth=linewidth, solid_capstyle="round")
    ax.set_aspect("equal", adjustable="box", anchor=anchor)
    ax.margins(0.02)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if not strokes:
        ax.text(0.5, 0.5, "(no ink)", ha="center", va="center", transform=ax.transAxes, color="#888888")


def _valid_length(analysis: Any, index: int) -> int:
    mask = _numpy(analysis.mask)
    if mask.ndim != 2:
        raise ValueError(f"analysis.mask must be (batch, time), got shape {mask.shape}")
    if not 0 <= index < mask.shape[0]:
        raise ValueError(f"sequence index {index} is outside the batch of {mask.shape[0]}")
    valid = np.asarray(mask[index]) > 0.5
    # The mask marks a valid prefix; count up to the first padded step.
    return int(np.argmin(valid)) if not valid.all() else len(valid)


def latent_figure(
    analysis: Any,
    x_raw: np.ndarray,
    modality: str,
    sample_rate: int = 16000,
    title: str | None = None,
    index: int = 0,
    attention: Any = None,
    characters: str | None = None,
) -> bytes:
    """The paper's Figure 2 for one sequence (`index` of the batch, 0 by default) -> PNG bytes.

    Top: delta_t = sum_j (mu_z,t^j - mu_z,t-1^j)^2 per step. Middle: KL(q || p) per step and latent
    dimension as an image (brighter = higher), dimensions ordered by their total KL, with the KL per
    step (summed over dimensions) drawn over it. Bottom: the input: speech frames flattened to a
    waveform against time in seconds, or handwriting strokes coloured by the KL of each pen step.
    Only the valid steps (the mask's prefix) are shown. `x_raw` is (T, D) raw frames or offsets,
    with T at least the number of valid steps (it may be the sequence alone, or the padded row).

    `attention` (a text-conditioned model's window weights, (T, U) for this sequence, or (B, T, U)) adds a fourth
    panel under these: the weight of each of the U `characters` (the text the model read) at each step."""
    if modality not in ("speech", "handwriting"):
        raise ValueError(f"modality must be 'speech' or 'handwriting', got {modality!r}")
    L = _valid_length(analysis, index)
    if L == 0:
        raise ValueError("the sequence has no valid time steps to plot")
    kl_dims = _numpy(analysis.kl_per_dim)[index, :L].astype(np.float64)  # (L, Z)
    kl = _numpy(analysis.kl)[index, :L].astype(np.float64)
    delta = _numpy(analysis.delta_mu)[index, :L].astype(np.float64)
    x = _numpy(x_raw).astype(np.float64, copy=False)
    if x.ndim == 3:
        x = x[index]
    if x.ndim != 2 or x.shape[0] < L:
        raise ValueError(f"x_raw must be (T, D) with T >= {L} valid steps, got shape {x.shape}")
    x = x[:L]
    speech = modality == "speech"
    if speech:
        sample_rate = int(_positive("sample_rate", sample_rate))
    elif x.shape[1] != 3:
        raise ValueError(f"handwriting x_raw must be (T, 3) offsets, got shape {x.shape}")

    att = None
    if attention is not None:
        att = _numpy(attention).astype(np.float64, copy=False)
        if att.ndim == 3:
            att = att[index]
        if att.ndim != 2 or att.shape[0] < L or att.shape[1] == 0:
            raise ValueError(f"attention must be (T, U) with T >= {L} valid steps and U >= 1, got shape {att.shape}")
        att = att[:L]
        if characters is not None and len(characters) != att.shape[1]:
            raise ValueError(f"characters has {len(characters)} characters but attention has {att.shape[1]} columns")

    Z = kl_dims.shape[1]
    order = np.argsort(-kl_dims.sum(axis=0), kind="stable")[: min(Z, MAX_KL_DIMS)]
    image = kl_dims[:, order].T  # (shown dims, L), most informative dimension on top

    heights: tuple[float, ...] = (1, 1.3, 1.4 if speech else 2.2)
    if att is None:
        fig = _new_figure(10.0, 7.2 if speech else 8.0)
    else:
        heights = (*heights, 1.5)
        fig = _new_figure(10.0, 10.0)
    grid = fig.add_gridspec(len(heights), 2, width_ratios=(1, 0.018), height_ratios=heights, hspace=0.45, wspace=0.02)
    ax_d, ax_k = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[1, 0])
    cax = fig.add_subplot(grid[1, 1])
    ax_x = fig.add_subplot(grid[2, 0])
    fig.add_subplot(grid[0, 1]).set_visible(False)
    fig.add_subplot(grid[2, 1]).set_visible(False)

    if speech:
        step = x.shape[1] / sample_rate  # seconds per frame
        t_edges = np.arange(L + 1) * step
        unit = "time (s)"
    else:
        step = 1.0
        t_edges = np.arange(L + 1) - 0.5
        unit = "time step"
    centres = (t_edges[:-1] + t_edges[1:]) / 2

    ax_d.plot(centres, delta, color="#1f77b4", linewidth=1.1, marker="." if L < 60 else None)
    ax_d.set_xlim(t_edges[0], t_edges[-1])
    ax_d.set_ylim(bottom=0, top=max(float(delta.max()) * 1.08, 1e-12))
    ax_d.yaxis.set_major_formatter(_short_numbers())
    ax_d.set_ylabel(r"$\delta_t$", fontsize=10)
    ax_d.set_title(r"$\delta_t = \sum_j (\mu^j_{z,t} - \mu^j_{z,t-1})^2$ (posterior means)", fontsize=9, loc="left")
    _style(ax_d)

    im = _heatmap(ax_k, image, t_edges, "magma")
    ax_k.set_ylabel("z dimension\n(by total KL)", fontsize=9)
    shown = f"top {len(order)} of {Z}" if len(order) < Z else f"all {Z}"
    ax_k.set_title(f"KL(q || p) per step and latent dimension ({shown} dimensions, nats)", fontsize=9, loc="left")
    ax_k.tick_params(labelsize=8)
    if len(order) <= 8:
        ax_k.set_yticks(range(len(order)), [str(j) for j in order])
    else:
        ax_k.set_yticks([])
    # The KL per step (summed over dimensions) over the image, scaled to its height.
    twin = ax_k.twinx()
    kl_max = float(kl.max())
    twin.plot(centres, kl, color="#7fdbff", linewidth=0.9, alpha=0.9, label=f"KL per step, all dims (max {kl_max:.3g})")
    twin.set_ylim(bottom=0, top=max(kl_max * 1.1, 1e-12))
    twin.set_yticks([])
    twin.set_xlim(t_edges[0], t_edges[-1])
    twin.legend(loc="upper right", fontsize=7, frameon=True, framealpha=0.7, handlelength=1.2)
    _colorbar(fig, im, cax, "nats")

    if speech:
        wave = x.reshape(-1)
        t = np.arange(len(wave)) / sample_rate
        ax_x.plot(t, wave, color=_TRAINING_COLOUR, linewidth=0.5)
        ax_x.set_xlim(t_edges[0], t_edges[-1])
        peak = float(np.abs(wave).max()) if wave.size else 0.0
        ax_x.set_ylim(-max(peak, 1e-3) * 1.05, max(peak, 1e-3) * 1.05)
        ax_x.set_ylabel("amplitude", fontsize=9)
        ax_x.set_xlabel(unit, fontsize=9)
        ax_x.set_title(f"input waveform ({len(wave) / sample_rate:.2f} s at {sample_rate} Hz)", fontsize=9, loc="left")
        _style(ax_x)
    else:
        pts = np.cumsum(x[:, :2], axis=0)
        _draw_strokes(ax_x, x, "#bbbbbb", linewidth=1.0)
        sc = ax_x.scatter(pts[:, 0], pts[:, 1], c=kl, cmap="magma", vmin=0.0, s=5, zorder=3, linewidths=0)
        ax_x.set_title(f"input strokes ({L} pen steps), points coloured by KL per step", fontsize=9, loc="left")
        sc.set_clim(0.0, max(float(kl.max()), 1e-12))
    ax_d.set_xlabel(unit, fontsize=8)
    ax_k.set_xlabel(unit, fontsize=8)
    if att is not None:
        _attention_panel(fig, grid, att, characters, t_edges, unit)
    if title:
        fig.suptitle(title, fontsize=11, x=0.02, y=0.99, ha="left", va="top")
    fig.subplots_adjust(left=0.09, right=0.93, top=0.9 if title else 0.95, bottom=0.07)
    return _png(fig)


def _attention_panel(
    fig: Any, grid: Any, att: np.ndarray, characters: str | None, t_edges: np.ndarray, unit: str
) -> None:
    """The last row of `latent_figure`: a text model's window weight on each character (rows) at each step."""
    ax, cax = fig.add_subplot(grid[3, 0]), fig.add_subplot(grid[3, 1])
    U = att.shape[1]
    im = _heatmap(ax, att.T, t_edges, "viridis")
    ax.set_title("attention: the window's weight on each character of the text per step", fontsize=9, loc="left")
    ax.set_ylabel("character", fontsize=9)
    ax.set_xlabel(unit, fontsize=8)
    ax.tick_params(labelsize=8)
    if characters is not None and U <= 60:
        ax.set_yticks(range(U), ["\u2423" if c == " " else c for c in characters], fontsize=7 if U > 30 else 8)
    else:
        ax.set_yticks([])
    _colorbar(fig, im, cax, "weight")


def _heatmap(ax: Any, image: np.ndarray, t_edges: np.ndarray, cmap: str) -> Any:
    """`image` (rows, steps), non-negative, drawn over the steps' time span from 0 to its maximum, row 0 on top."""
    vmax = float(image.max()) if image.size and image.max() > 0 else 1.0
    return ax.imshow(
        image,
        aspect="auto",
        origin="upper",
        interpolation="nearest",
        cmap=cmap,
        vmin=0.0,
        vmax=vmax,
        extent=(t_edges[0], t_edges[-1], image.shape[0] - 0.5, -0.5),
    )


def _colorbar(fig: Any, im: Any, cax: Any, label: str) -> None:
    cbar = fig.colorbar(im, cax=cax)
    cbar.set_label(label, fontsize=8)
    cbar.ax.yaxis.set_major_formatter(_short_numbers())
    cbar.ax.tick_params(labelsize=7)


def _group_check(samples: Any, what: str) -> list[tuple[str, list[np.ndarray]]]:
    if not isinstance(samples, dict) or not samples:
        raise ValueError(f"{what} must be a non-empty dict of name -> list of arrays")
    out = []
    for name, items in samples.items():
        if isinstance(items, np.ndarray) or hasattr(items, "detach"):
            items = [items]
        items = [_numpy(a).astype(np.float64, copy=False) for a in items][:MAX_EXAMPLES]
        if items:
            out.append((str(name), items))
    if not out:
        raise ValueError(f"{what}: every list is empty")
    return out


def _colour_for(name: str, i: int) -> str:
    return _TRAINING_COLOUR if name.lower().startswith("training") else _MODEL_COLOURS[i % len(_MODEL_COLOURS)]


def _loudest_window(wave: np.ndarray, n: int) -> int:
    """Start of the length-n window with the most energy (so that the zoom shows speech, not silence)."""
    if len(wave) <= n:
        return 0
    c = np.concatenate([[0.0], np.cumsum(wave.astype(np.float64) ** 2)])
    energy = c[n:] - c[:-n]
    return int(np.argmax(energy))


def waveforms_figure(waves: dict[str, list[np.ndarray]], sample_rate: int, zoom_seconds: float = ZOOM_SECONDS) -> bytes:
    """The paper's Figure 3 -> PNG bytes: one row per model (e.g. "training examples", "RNN-GMM",
    "VRNN-Gauss"), up to three examples each; every example as its global waveform and, beside it, a
    zoomed-in window of `zoom_seconds` (the loudest one, shaded on the global plot). Waves are raw
    1-D waveforms (a 2-D (frames, frame_size) array is flattened)."""
    groups = _group_check(waves, "waves")
    sample_rate = int(_positive("sample_rate", sample_rate))
    zoom_n = max(2, round(_positive("zoom_seconds", zoom_seconds) * sample_rate))
    cols = max(len(items) for _, items in groups)
    fig = _new_figure(4.6 * cols + 0.6, 1.75 * len(groups) + 0.5)
    grid = fig.add_gridspec(len(groups), 2 * cols, width_ratios=(2.6, 1) * cols, hspace=0.55, wspace=0.25)
    for r, (name, items) in enumerate(groups):
        colour = _colour_for(name, r)
        for c, w in enumerate(items):
            w = np.nan_to_num(w.reshape(-1))
            ax_g, ax_z = fig.add_subplot(grid[r, 2 * c]), fig.add_subplot(grid[r, 2 * c + 1])
            t = np.arange(len(w)) / sample_rate
            peak = max(float(np.abs(w).max()) if w.size else 0.0, 1e-3) * 1.05
            ax_g.plot(t, w, color=colour, linewidth=0.35)
            ax_g.set_ylim(-peak, peak)
            ax_g.set_xlim(0, max(len(w) / sample_rate, 1 / sample_rate))
            s = _loudest_window(w, zoom_n)
            e = min(len(w), s + zoom_n)
            ax_g.axvspan(s / sample_rate, e / sample_rate, color="#f2c14e", alpha=0.35, linewidth=0)
            ax_z.plot(t[s:e] * 1000, w[s:e], color=colour, linewidth=0.8)
            zpeak = max(float(np.abs(w[s:e]).max()) if e > s else 0.0, 1e-3) * 1.1
            ax_z.set_ylim(-zpeak, zpeak)
            if e > s + 1:
                ax_z.set_xlim(t[s] * 1000, t[e - 1] * 1000)
            _style(ax_g)
            _style(ax_z)
            ax_z.tick_params(labelsize=7)
            if c == 0:
                ax_g.set_ylabel(name, fontsize=9, fontweight="bold", color=colour)
            if r == len(groups) - 1:
                ax_g.set_xlabel("time (s)", fontsize=8)
                ax_z.set_xlabel("time (ms)", fontsize=8)
            if r == 0:
                ax_g.set_title(f"example {c + 1}: whole waveform", fontsize=8, loc="left")
                ax_z.set_title(f"zoom ({zoom_n / sample_rate * 1000:.0f} ms)", fontsize=8, loc="left")
    fig.subplots_adjust(left=0.08, right=0.98, top=1 - 0.4 / fig.get_figheight(), bottom=0.5 / fig.get_figheight())
    return _png(fig)


def handwriting_figure(samples: dict[str, list[np.ndarray]]) -> bytes:
    """The paper's Figure 4 -> PNG bytes: one panel per model, labelled (a), (b), ... with its name
    (e.g. "training examples", "RNN-Gauss", "VRNN-GMM"), holding up to three lines of handwriting
    drawn from raw offsets (T, 3) (dx, dy, pen), one line per row."""
    groups = _group_check(samples, "samples")
    groups = [(name, [_check_offsets(a) for a in items]) for name, items in groups]
    rows = sum(len(items) for _, items in groups)
    fig = _new_figure(9.0, 1.05 * rows + 0.45 * len(groups) + 0.2)
    ratios: list[float] = []
    for _, items in groups:
        ratios += [0.35] + [1.0] * len(items)
    grid = fig.add_gridspec(len(ratios), 1, height_ratios=ratios, hspace=0.08)
    row = 0
    for g, (name, items) in enumerate(groups):
        label_ax = fig.add_subplot(grid[row, 0])
        label_ax.axis("off")
        label_ax.text(
            0.0,
            0.1,
            f"({chr(ord('a') + g % 26)}) {name}",
            fontsize=10,
            fontweight="bold",
            color=_colour_for(name, g),
            transform=label_ax.transAxes,
        )
        row += 1
        for a in items:
            ax = fig.add_subplot(grid[row, 0])
            _draw_strokes(ax, a, "#1a1a1a" if name.lower().startswith("training") else _colour_for(name, g), anchor="W")
            row += 1
    fig.subplots_adjust(left=0.02, right=0.98, top=0.99, bottom=0.01)
    return _png(fig)
