"""Benchmark: the hoisted time loop against the naive per-step loop, IS-40 cost, sampling speed.

    python -m model.bench [--device auto|cpu|cuda] [--batch 32 128] [--repeats 7] [--quick]

Prints one JSON object. Both training steps (forward, backward, Adam) run in this process,
alternately, on the same model and data, so machine noise hits both alike; ratios are
reference time / our time (above 1: we are faster).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

from . import defaults
from .config import ModelConfig
from .fused import supports as fused_supports
from .reference import reference_forward
from .runtime import resolve_device, tune_malloc
from .stepper import Stepper
from .text import DEFAULT_ALPHABET
from .vrnn import VRNN, build_model

# The benchmark setting: paper-like speech frames, a mid-sized VRNN-Gauss.
BENCH_CONFIG = dict(family="vrnn", output="gauss", x_dim=200, z_dim=64, h_dim=512, mlp_layers=1, mlp_width=512)
QUICK_CONFIG = dict(family="vrnn", output="gauss", x_dim=40, z_dim=8, h_dim=32, mlp_layers=1, mlp_width=32)
# The shipped handwriting VRNN-GMM's shape (the handwriting-demo preset, parameter-matched): one request's steps.
HANDWRITING_CONFIG = dict(
    family="vrnn", output="gmm", modality="handwriting", x_dim=3, z_dim=50, h_dim=256, mlp_layers=1, mlp_width=54
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def matmul_rate(device: torch.device, n: int = 2048, repeats: int = 5) -> float:
    """This machine's float32 matrix-multiply rate in FLOP/s (best of `repeats` n x n products)."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    a @ b  # warm-up
    best = min(_timed(lambda: a @ b, device) for _ in range(repeats))
    return 2 * n**3 / best


def train_step_fn(model: VRNN, x: torch.Tensor, reference: bool) -> Callable[[], None]:
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        out = reference_forward(model, x) if reference else model(x)
        out.loss.backward()
        opt.step()

    return step


def _addmm_inplace_flops(self_shape: Any, a_shape: Any, b_shape: Any, *args: Any, **kwargs: Any) -> int:
    return flop_counter.mm_flop(a_shape, b_shape)


def flop_counter_mode() -> FlopCounterMode:
    """PyTorch's FLOP counter, counting the in-place `addmm_` too (it counts `addmm` but not its in-place form, which
    the loop products (`networks.LoopProduct`) and the stepper accumulate with)."""
    return FlopCounterMode(display=False, custom_mapping={torch.ops.aten.addmm_: _addmm_inplace_flops})


def step_flops(model: VRNN, x: torch.Tensor) -> int:
    """FLOPs of one forward + backward (matrix products, as counted by PyTorch)."""
    counter = flop_counter_mode()
    with counter:
        model(x).loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def bench_training(cfg: ModelConfig, batch: int, steps: int, repeats: int, device: torch.device, peak: float) -> dict:
    torch.manual_seed(0)
    model = build_model(cfg).to(device)
    x = torch.randn(batch, steps, cfg.x_dim, device=device)
    ours, ref = train_step_fn(model, x, False), train_step_fn(model, x, True)
    ours()
    ref()  # warm-up both
    t_ours, t_ref = [], []
    for _ in range(repeats):  # alternate so that drifts in machine speed hit both alike
        t_ours.append(_timed(ours, device))
        t_ref.append(_timed(ref, device))
    flops = step_flops(model, x)
    s_ours, s_ref = statistics.median(t_ours), statistics.median(t_ref)
    return {
        "batch": batch,
        "steps": steps,
        "seconds_per_step": {"hoisted": s_ours, "reference": s_ref},
        "speedup_vs_reference": s_ref / s_ours,
        "flops_per_step": flops,
        "fraction_of_matmul_rate": {"hoisted": flops / s_ours / peak, "reference": flops / s_ref / peak},
    }


@torch.no_grad()
def bench_is(cfg: ModelConfig, batch: int, steps: int, repeats: int, device: torch.device, k: int, peak: float) -> dict:
    torch.manual_seed(0)
    model = build_model(cfg).to(device).eval()
    x = torch.randn(batch, steps, cfg.x_dim, device=device)
    model(x)
    model.log_likelihood(x, num_samples=k)
    t_elbo = statistics.median(_timed(lambda: model(x), device) for _ in range(repeats))
    t_is = statistics.median(_timed(lambda: model.log_likelihood(x, num_samples=k), device) for _ in range(repeats))

    def elbo_with_gradients() -> None:
        with torch.enable_grad():
            model(x).loss.backward()

    t_grad = statistics.median(_timed(elbo_with_gradients, device) for _ in range(repeats))
    flops = {}
    for name, fn in (
        ("elbo", lambda: model(x)),
        ("importance_sampled", lambda: model.log_likelihood(x, num_samples=k)),
    ):
        counter = flop_counter_mode()
        with counter:
            fn()
        flops[name] = counter.get_total_flops()
    return {
        "batch": batch,
        "num_samples": k,
        # matrix-product FLOPs of each (PyTorch's count) and the share of the machine's matmul rate each reached:
        # the IS estimate's floor is its arithmetic ratio times the ELBO pass's rate over its own
        "flops": flops,
        "flops_ratio": flops["importance_sampled"] / flops["elbo"],
        "fraction_of_matmul_rate": {
            "elbo": flops["elbo"] / t_elbo / peak,
            "importance_sampled": flops["importance_sampled"] / t_is / peak,
        },
        "seconds": {"elbo": t_elbo, "elbo_with_gradients": t_grad, "importance_sampled": t_is},
        "is_over_elbo": t_is / t_elbo,
        # what the ratio would be with the IS estimate's products at the machine's full matmul rate (its floor)
        "is_at_full_rate_over_elbo": flops["importance_sampled"] / peak / t_elbo,
        "is_over_elbo_with_gradients": t_is / t_grad,
    }


def _kernel(model: Any) -> str:
    """What a paired `VRNN.sample` runs here: "fused" (`model.fused`: the whole step in one native call), "native"
    (the stepper on `model.native`'s products) or "torch" (the stepper on `model.paired`'s)."""
    return "fused" if fused_supports(model) else Stepper(model, paired=True).kernel


@torch.no_grad()
def bench_sampling(cfg: ModelConfig, seconds: float, repeats: int, device: torch.device) -> dict:
    model = build_model(cfg).to(device).eval()
    steps = round(seconds * defaults.SAMPLE_RATE / cfg.x_dim)
    model.sample(1, 2)

    def timed(paired: bool) -> float:
        runs = (_timed(lambda: model.sample(1, steps, paired=paired), device) for _ in range(max(3, repeats)))
        return statistics.median(runs)

    t_plain, t_paired = timed(False), timed(True)
    t = t_paired if model.samples_paired else t_plain
    return {
        "kernel": _kernel(model),  # what the paired step runs: the fused step, native products or PyTorch's
        "audio_seconds": steps * cfg.x_dim / defaults.SAMPLE_RATE,
        "steps": steps,
        "paired": model.samples_paired,  # how the model samples on this machine (stepper.paired_pays)
        "seconds": t,
        "seconds_one_row_kernel": t_plain,  # PyTorch's one-row products (paired=False)
        "seconds_paired": t_paired,  # model.paired's products (paired=True)
        "real_time_factor": t / (steps * cfg.x_dim / defaults.SAMPLE_RATE),
    }


def bench_step(cfg: ModelConfig, steps: int, repeats: int, device: torch.device) -> dict:
    """One request's `steps` sampling steps at batch 1: `VRNN.sample` (the lean step, `model.stepper`) against the
    module loop it is checked against (`reference=True`), with the same generator: the same samples, or an error."""
    torch.manual_seed(0)
    model = build_model(cfg).to(device).eval()

    def run(reference: bool) -> torch.Tensor:
        g = torch.Generator(device=device).manual_seed(1)
        return model.sample(1, steps, generator=g, reference=reference, paired=False)  # (the module loop's kernels)

    if not torch.equal(run(False), run(True)):
        raise RuntimeError("the lean sampling step and the module loop gave different samples")

    def default() -> torch.Tensor:  # what VRNN.sample does by default here (paired where it pays: native products)
        return model.sample(1, steps, generator=torch.Generator(device=device).manual_seed(1))

    n = max(3, repeats)
    t_ref = statistics.median(_timed(lambda: run(True), device) for _ in range(n))
    t_fast = statistics.median(_timed(lambda: run(False), device) for _ in range(n))
    t_default = statistics.median(_timed(default, device) for _ in range(n))
    return {
        "steps": steps,
        "params": sum(p.numel() for p in model.parameters()),
        "paired": model.samples_paired,
        "kernel": _kernel(model) if model.samples_paired else "torch",
        "seconds": {"stepper": t_fast, "module_loop": t_ref, "default": t_default},
        "speedup": t_ref / t_fast,
    }


@torch.no_grad()
def bench_engine(cfg: ModelConfig, steps: int, requests: int, repeats: int, device: torch.device) -> dict:
    """`requests` concurrent sampling requests: one after another (`VRNN.sample` at batch 1) against the
    step-level batching engine (`model.engine`, every row bit for bit its solo sample)."""
    from .engine import SamplingEngine

    model = build_model(cfg).to(device).eval()

    def one_by_one() -> None:
        for s in range(requests):
            model.sample(1, steps, generator=torch.Generator(device=device).manual_seed(s))

    def batched(paired: bool | None) -> None:
        engine = SamplingEngine(model, max_batch=requests, paired=paired)
        for s in range(requests):
            engine.submit(steps=steps, seed=s)
        engine.run_until_idle()

    n = max(1, repeats // 2)
    t_seq = statistics.median(_timed(one_by_one, device) for _ in range(n))
    t_eng = statistics.median(_timed(lambda: batched(None), device) for _ in range(n))
    # the same engine the other way: row by row (model.rowwise) for a paired model, paired for the others
    t_other = statistics.median(_timed(lambda: batched(not model.samples_paired), device) for _ in range(n))
    return {
        "requests": requests,
        "steps": steps,
        "paired": model.samples_paired,
        "seconds": {"one_by_one": t_seq, "engine": t_eng, "engine_other_way": t_other},
        "throughput_ratio": t_seq / t_eng,
        "throughput_ratio_other_way": t_seq / t_other,
    }


# The shipped text model's shape (handwriting-text-vrnn-gmm: Graves' window of 10 components over 77 characters).
TEXT_CONFIG = dict(HANDWRITING_CONFIG, mlp_width=128, n_components=20, window_components=10, alphabet=DEFAULT_ALPHABET)
TEXT_LINE = "the quick brown fox jumps over a lazy dog"  # (a fresh model's window reads it for longer than the cap)


@torch.no_grad()
def bench_text(steps: int, requests: int, repeats: int, device: torch.device) -> dict:
    """A line of text at batch 1 (`steps` steps: the cap) through the stepper (`fused=False`) and, where the
    native library runs, the fused step (`model.fused.FusedTextSampler`, TextVRNN.sample's default there); then
    `requests` concurrent lines one after another against the text engine (`model.engine.TextEngine`, every request
    bit for bit its solo sample)."""
    from .conditional import build_text_model
    from .engine import TextEngine
    from .fused import supports_text

    torch.manual_seed(0)
    model = build_text_model(ModelConfig.from_dict(TEXT_CONFIG)).to(device).eval()
    fused = supports_text(model)

    def line(use_fused: bool, seed: int = 1) -> None:
        g = torch.Generator(device=device).manual_seed(seed)
        model.sample([TEXT_LINE], max_steps=steps, bias=2.0, generator=g, fused=use_fused)

    n = max(3, repeats)
    out: dict[str, Any] = {"steps": steps, "params": sum(p.numel() for p in model.parameters()), "fused": fused}
    out["seconds"] = {"stepper": statistics.median(_timed(lambda: line(False), device) for _ in range(n))}
    if not fused:
        return out
    out["seconds"]["fused"] = statistics.median(_timed(lambda: line(True), device) for _ in range(n))
    out["speedup"] = out["seconds"]["stepper"] / out["seconds"]["fused"]

    def one_by_one() -> None:
        for s in range(requests):
            line(True, s)

    def batched() -> None:
        engine = TextEngine(model, max_batch=requests)
        for s in range(requests):
            engine.submit([TEXT_LINE], max_steps=steps, bias=2.0, seed=s)
        engine.run_until_idle()

    t_seq = statistics.median(_timed(one_by_one, device) for _ in range(max(1, repeats // 2)))
    t_eng = statistics.median(_timed(batched, device) for _ in range(max(1, repeats // 2)))
    out["engine"] = {"requests": requests, "one_by_one": t_seq, "engine": t_eng, "throughput_ratio": t_seq / t_eng}
    return out


def pick_device(name: str) -> torch.device:
    try:
        return resolve_device(name)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux; the kernels' speed and rounding depend on it), or a generic one,
    with its vector instructions where the native library builds for them (one model name covers CPUs with and
    without AVX-512: "AMD EPYC" VMs have been both)."""
    from . import native

    name = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    isa = {"x86-64-v4": "AVX-512", "x86-64-v3": "AVX2"}.get(native.level() or "")
    return f"cpu: {name}" + (f" ({isa})" if isa else "")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m model.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--batch", type=int, nargs="+", default=[32, 128], help="batch sizes (default: 32 128)")
    parser.add_argument("--steps", type=int, default=40, help="time steps per sequence (default: 40)")
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats of each measurement (default: 7)")
    parser.add_argument("--num-samples", type=int, default=defaults.NUM_IS_SAMPLES, help="K of the IS estimate")
    parser.add_argument("--quick", action="store_true", help="a tiny model and few repeats (a smoke test)")
    parser.add_argument("--report", metavar="FILE.md", help="also write the numbers as a Markdown report")
    args = parser.parse_args(argv)
    if min(args.batch) < 1 or args.steps < 1 or args.repeats < 1 or args.num_samples < 1:
        parser.error("--batch, --steps, --repeats and --num-samples must be positive")
    device = pick_device(args.device)
    malloc_tuned = tune_malloc()
    cfg = ModelConfig.from_dict(QUICK_CONFIG if args.quick else BENCH_CONFIG)
    repeats = 2 if args.quick else args.repeats
    peak = matmul_rate(device, n=256 if args.quick else 2048)
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "malloc_tuned": malloc_tuned,
        "config": cfg.to_dict(),
        "params": sum(p.numel() for p in build_model(cfg).parameters()),
        "matmul_flops_per_second": peak,
        "training": [bench_training(cfg, b, args.steps, repeats, device, peak) for b in args.batch],
        "log_likelihood": bench_is(cfg, args.batch[0], args.steps, repeats, device, args.num_samples, peak),
        "sampling": bench_sampling(cfg, 2.0, repeats, device),
        "handwriting_step": bench_step(
            ModelConfig.from_dict(HANDWRITING_CONFIG), 50 if args.quick else 700, repeats, device
        ),
        "engine": bench_engine(cfg, 20 if args.quick else 160, 4 if args.quick else 16, repeats, device),
        "text": bench_text(30 if args.quick else 400, 4 if args.quick else 16, repeats, device),
    }
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    if args.report:
        report = Path(args.report)
        report.parent.mkdir(parents=True, exist_ok=True)
        section = markdown_report(result, ["python", "-m", "model.bench", *(argv or sys.argv[1:])])
        report.write_text(merge_report(report.read_text() if report.exists() else "", section))
    return result


REPORT_TITLE = "# Benchmarks of the model library"
REPORT_INTRO = (
    "Speed and rounding depend on the machine's kernels, so every machine has its own section: `python -m "
    "model.bench --report FILE.md` replaces the section of the machine it runs on (its CPU or GPU and thread "
    "count) and keeps the others."
)


def machine_heading(r: dict) -> str:
    return f"## {r['device']}, {r['threads']} thread{'s' if r['threads'] != 1 else ''}"


def merge_report(old: str, section: str) -> str:
    """`old` (a report, or "") with `section` (one machine's, starting with its "## " heading) in place of the
    section of the same heading, or after the others."""
    heading = section.splitlines()[0]
    sections: list[list[str]] = []
    if not old.startswith(f"{REPORT_TITLE}\n\n{REPORT_INTRO}"):  # not a per-machine report: replaced whole
        old = ""
    for line in old.splitlines():
        if line.startswith("## "):
            sections.append([line])
        elif sections:
            sections[-1].append(line)
    kept = ["\n".join(lines).strip() for lines in sections if lines[0] != heading]
    at = next((i for i, lines in enumerate(sections) if lines[0] == heading), len(kept))
    kept.insert(at, section.strip())
    return "\n\n".join([REPORT_TITLE, REPORT_INTRO, *kept]) + "\n"


def _how(step: dict) -> str:
    if not step["paired"]:
        return "plain"
    return "the fused native step, `model.fused`" if step["kernel"] == "fused" else f"paired, {step['kernel']} products"


def markdown_report(r: dict, command: list[str]) -> str:
    """The numbers of one run as one machine's Markdown section, with the command that produced them."""
    lines = [
        machine_heading(r),
        "",
        f"Produced by `{' '.join(command)}` on {r['device']} ({r['threads']} threads, torch {r['torch']}).",
        f"Model: {r['config']['family']} / {r['config']['output']}, x_dim={r['config']['x_dim']}, "
        f"z_dim={r['config']['z_dim']}, h_dim={r['config']['h_dim']}, mlp_layers={r['config']['mlp_layers']}, "
        f"mlp_width={r['config']['mlp_width']} ({r['params']:,} parameters). "
        f"Matrix-multiply rate of this machine: {r['matmul_flops_per_second'] / 1e9:.0f} GFLOP/s.",
        "",
        "### Training step (forward, backward, Adam)",
        "",
        "| batch | T | hoisted s/step | reference s/step | speed-up | hoisted % of matmul rate | reference % |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for t in r["training"]:
        s, f = t["seconds_per_step"], t["fraction_of_matmul_rate"]
        lines.append(
            f"| {t['batch']} | {t['steps']} | {s['hoisted']:.4f} | {s['reference']:.4f} | "
            f"{t['speedup_vs_reference']:.2f}x | {100 * f['hoisted']:.0f}% | {100 * f['reference']:.0f}% |"
        )
    ll, sm = r["log_likelihood"], r["sampling"]
    lines += [
        "",
        "### Likelihood and sampling",
        "",
        f"- IS estimate with K={ll['num_samples']} on B={ll['batch']}: {ll['seconds']['importance_sampled']:.3f} s, "
        f"one ELBO pass {ll['seconds']['elbo']:.4f} s: **{ll['is_over_elbo']:.1f}x** "
        f"({ll['is_over_elbo_with_gradients']:.1f}x an ELBO pass with its backward pass, "
        f"{ll['seconds']['elbo_with_gradients']:.4f} s). The K samples do {ll['flops_ratio']:.1f}x the matrix "
        f"arithmetic of the ELBO pass (only what depends on x alone is shared), at "
        f"{100 * ll['fraction_of_matmul_rate']['importance_sampled']:.0f}% of the machine's matmul rate against the "
        f"ELBO pass's {100 * ll['fraction_of_matmul_rate']['elbo']:.0f}%: at the full rate the estimate would still "
        f"take {ll['is_at_full_rate_over_elbo']:.1f}x this ELBO pass.",
        f"- Sampling {sm['audio_seconds']:.1f} s of speech ({sm['steps']} frames): {sm['seconds']:.3f} s, "
        f"real-time factor **{sm['real_time_factor']:.3f}** (below 1: faster than real time), "
        + (
            "sampled by the fused native step (`model.fused`: the whole step in one C call, row-invariant by "
            f"construction, so that batches keep its bits); {sm['seconds_one_row_kernel']:.3f} s on PyTorch's "
            "one-row products (`paired=False`)."
            if sm["paired"] and sm.get("kernel") == "fused"
            else "sampled paired on `model.native`'s products (row-invariant by construction, so that batches keep its "
            f"bits); {sm['seconds_one_row_kernel']:.3f} s on PyTorch's one-row products (`paired=False`)."
            if sm["paired"] and sm.get("kernel") == "native"
            else f"sampled paired (`model.paired`: every product as in a batch of two, so that batches keep its bits); "
            f"{sm['seconds_one_row_kernel']:.3f} s on PyTorch's one-row products (`paired=False`)."
            if sm["paired"]
            else f"on PyTorch's one-row products (this machine's kernels keep no batch's bits: `stepper.paired_pays`);"
            f" {sm['seconds_paired']:.3f} s paired (`paired=True`)."
        ),
    ]
    if "handwriting_step" in r:
        hw = r["handwriting_step"]
        lines.append(
            f"- One handwriting request of {hw['steps']} steps at batch 1 (the shipped VRNN-GMM's shape, "
            f"{hw['params']:,} parameters): {1000 * hw['seconds']['stepper']:.0f} ms with the lean step "
            f"(`model.stepper`), {1000 * hw['seconds']['module_loop']:.0f} ms through the modules, the same "
            f"samples: **{hw['speedup']:.2f}x**."
            + (
                f" `VRNN.sample`'s default here ({_how(hw)}): **{1000 * hw['seconds']['default']:.0f} ms**."
                if "default" in hw["seconds"]
                else ""
            )
        )
    if "engine" in r:
        en = r["engine"]
        lines.append(
            f"- {en['requests']} concurrent sampling requests of {en['steps']} steps: one after another "
            f"{en['seconds']['one_by_one']:.3f} s, batched by `model.engine` (each row bit for bit its solo sample) "
            f"{en['seconds']['engine']:.3f} s: **{en['throughput_ratio']:.1f}x** the throughput "
            f"({'paired' if en['paired'] else 'row by row, `model.rowwise`'}; the same engine "
            f"{'row by row' if en['paired'] else 'paired'}: {en['seconds']['engine_other_way']:.3f} s, "
            f"{en['throughput_ratio_other_way']:.1f}x)."
        )
    if "text" in r:
        tx = r["text"]
        text = (
            f"- A line of text at batch 1 ({tx['steps']} steps, the shipped text model's shape, {tx['params']:,} "
            f"parameters): {1000 * tx['seconds']['stepper']:.0f} ms through the stepper (`fused=False`)"
        )
        if tx["fused"]:
            en = tx["engine"]
            text += (
                f", {1000 * tx['seconds']['fused']:.0f} ms in the fused step (`model.fused.FusedTextSampler`, "
                f"`TextVRNN.sample`'s default here): **{tx['speedup']:.1f}x**. {en['requests']} concurrent lines: "
                f"one after another {en['one_by_one']:.3f} s, batched by `model.engine.TextEngine` (each request bit "
                f"for bit its solo sample) {en['engine']:.3f} s: **{en['throughput_ratio']:.1f}x** the throughput."
            )
        else:
            text += " (no native library here: the text engine does not run)."
        lines.append(text)
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
