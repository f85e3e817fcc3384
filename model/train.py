"""Train one model and write its checkpoint.

    python -m model.train --data data/speech-demo --preset speech-demo --family vrnn --output gmm \\
        --out checkpoints/speech-vrnn-gmm.safetensors

The same command under `torchrun --nproc_per_node N` trains with DistributedDataParallel (NCCL on
GPUs, gloo on CPU). Adam; the gradient norm is clipped between backward() and step(); early stopping
on the validation ELBO keeps the best weights in --out; --resume continues from PATH.resume.*; a
CSV and JSON log and a PNG of the curves are written beside the checkpoint.

`--condition text` trains the text-conditioned handwriting model (model.conditional.TextVRNN) on the
corpus's line texts (model.data.texts): whole lines, each with its text; its checkpoint loads with
model.conditional.load_text_checkpoint.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import functools
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from . import defaults
from .checkpoint import CheckpointError, _paths, load_checkpoint, load_weights, read_metadata, save_checkpoint
from .conditional import TextVRNN, build_text_model, load_text_checkpoint
from .config import FAMILIES, OUTPUTS, ModelConfig
from .data import Corpus, DataError, pad_batch
from .data.texts import corpus_texts
from .evaluate import evaluate_sequences, load_corpus
from .networks import max_col_norm_
from .runtime import resolve_device, tune_malloc
from .styles import StylesError, add_styles, corpus_styles, styles_path
from .text import DEFAULT_ALPHABET, UnsupportedCharactersError, encode
from .vrnn import INIT_SCHEMES, VRNN, build_model

# The paper's settings (Section 4) and small demo settings. `mlp_width` is the RNN-Gauss width; the
# other models get the width that gives their networks (all but the LSTM) the same parameter count,
# as the paper matched them. The paper does not give z's size: we use 200 for speech (the frame
# size) and, for handwriting, the authors' 50 (their IAM-OnDB config.txt). The demo presets are sized
# so that all shipped checkpoints train in about an hour on 2 CPU cores.
_PAPER_SPEECH = dict(modality="speech", mlp_layers=4, z_dim=200)
_DEMO = dict(h_dim=256, mlp_layers=1)
PRESETS: dict[str, dict[str, Any]] = {
    "blizzard": dict(_PAPER_SPEECH, h_dim=4000, mlp_width=800, lr=3e-4, batch_size=128, chunk_seconds=0.5),
    "timit": dict(_PAPER_SPEECH, h_dim=2000, mlp_width=600, lr=1e-3, batch_size=64, chunk_seconds=None),
    "onomatopoeia": dict(_PAPER_SPEECH, h_dim=2000, mlp_width=600, lr=3e-4, batch_size=64, chunk_seconds=None),
    "accent": dict(_PAPER_SPEECH, h_dim=2000, mlp_width=600, lr=1e-3, batch_size=128, chunk_seconds=0.5),
    "iam-ondb": dict(modality="handwriting", h_dim=1200, mlp_layers=1, mlp_width=600, z_dim=50, lr=3e-4, batch_size=64),
    # The demos keep OPTION_DEFAULTS' lr (1e-3), batch size (64) and speech chunks (0.5 s).
    "speech-demo": dict(_DEMO, modality="speech", mlp_width=512, z_dim=32, eval_every=100, max_minutes=9.0),
    "handwriting-demo": dict(
        _DEMO, modality="handwriting", mlp_width=256, z_dim=50, max_len=250, eval_every=50, max_minutes=10.0
    ),
}

# Defaults of the options a preset may set (each overridable on the command line).
OPTION_DEFAULTS: dict[str, Any] = dict(
    h_dim=512,
    mlp_layers=2,
    mlp_width=512,
    z_dim=64,
    n_components=defaults.N_COMPONENTS,
    std_floor=defaults.STD_FLOOR,
    lr=1e-3,
    batch_size=64,
    chunk_seconds=0.5,
    max_len=None,
    eval_every=200,
    max_minutes=None,
)

# Training recipes (`--recipe`): a bundle of defaults for the options below, each still overridable.
# "cle" is the authors' (jych/nips2015_vrnn with jych/cle; see model/defaults.py): their init, each
# parameter's gradient clipped to norm 5, the max column norm after each update, std offset 1e-4.
RECIPES: dict[str, dict[str, Any]] = {
    "default": dict(init="default", clip_grad=defaults.CLIP_GRAD, clip_mode="global", max_col_norm=None),
    "cle": dict(
        init="cle",
        clip_grad=defaults.CLIP_GRAD,
        clip_mode="per-tensor",
        max_col_norm=defaults.CLE_MAX_COL_NORM,
        std_floor=defaults.CLE_STD_FLOOR,
    ),
}
FREE_BITS_MODES = ("frame", "dim")
CONDITIONS = ("none", "text")


def dnn_params(cfg: ModelConfig) -> int:
    """Parameters of the model's networks other than the LSTM: what the paper matched across models."""
    model = build_model(cfg)
    return sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in model.rnn.parameters())


def matched_width(cfg: ModelConfig, reference: ModelConfig) -> int:
    """The mlp_width that brings cfg's network parameters closest to the reference model's."""
    target = dnn_params(reference)
    lo, hi = 1, max(reference.mlp_width, 1)
    while dnn_params(dataclasses.replace(cfg, mlp_width=hi)) < target:
        hi *= 2
    while hi - lo > 1:  # parameters grow with the width: bisect
        mid = (lo + hi) // 2
        if dnn_params(dataclasses.replace(cfg, mlp_width=mid)) < target:
            lo = mid
        else:
            hi = mid
    return min((lo, hi), key=lambda w: abs(dnn_params(dataclasses.replace(cfg, mlp_width=w)) - target))


# ----------------------------------------------------------------------------------- arguments


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The training options: the command line with the preset's and the recipe's defaults filled in
    (built by `parse_args`; PATH.log.json records it, in this order, as "args")."""

    data: str
    out: str  # PATH.safetensors; the logs and the resume state are written beside it
    preset: str | None
    modality: str
    family: str
    output: str
    h_dim: int
    z_dim: int
    mlp_layers: int
    mlp_width: int
    n_components: int
    std_floor: float
    no_match_params: bool
    lr: float
    batch_size: int
    max_len: int | None
    chunk_seconds: float | None  # None: whole files
    recipe: str
    init: str
    clip_grad: float
    clip_mode: str
    max_col_norm: float | None  # None: off
    free_bits: float
    free_bits_mode: str
    kl_warmup: int
    stateful: bool
    max_steps: int | None
    max_minutes: float | None
    eval_every: int
    patience: int
    test_samples: int
    seed: int
    device: str
    threads: int | None
    resume: bool
    no_progress: bool
    width_given: bool  # --mlp-width was given: no parameter matching
    condition: str = "none"  # "text": model.conditional.TextVRNN on each line's text, whole lines
    window_components: int | None = None  # --condition text: the attention window's Gaussians (None: ModelConfig's)
    point_stride: int = 1  # handwriting: every n-th pen point of each stroke (NormStats.point_stride)
    init_from: str | None = None  # --init-from: a checkpoint's weights to start from

    def beside_out(self, suffix: str) -> Path:
        """A file beside the checkpoint: PATH.safetensors -> PATH<suffix>."""
        stem = Path(self.out).with_suffix("")
        return stem.with_name(stem.name + suffix)


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    p = argparse.ArgumentParser(
        prog="python -m model.train",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="presets: " + ", ".join(PRESETS) + "\n\nexamples:\n"
        "  python -m model.train --data data/speech-demo --preset speech-demo --family vrnn --output gauss \\\n"
        "      --out checkpoints/speech-vrnn-gauss.safetensors\n"
        "  torchrun --nproc_per_node 2 -m model.train --data DIR --preset timit --family vrnn --output gmm \\\n"
        "      --out x.safetensors\n"
        "  python -m model.train --data data/handwriting-demo --preset handwriting-demo --condition text \\\n"
        "      --family vrnn --output gmm --out checkpoints/handwriting-text-vrnn-gmm.safetensors",
    )
    p.add_argument("--data", required=True, help="corpus folder (WAV/FLAC for speech, IAM XML/JSON for handwriting)")
    p.add_argument("--out", required=True, help="checkpoint to write: PATH.safetensors (+ PATH.json, logs beside it)")
    p.add_argument("--preset", choices=sorted(PRESETS), help="the paper's settings for a data set, or a demo setting")
    p.add_argument("--modality", choices=["speech", "handwriting"], help="required unless a preset gives it")
    p.add_argument("--family", choices=FAMILIES, default="vrnn")
    p.add_argument("--output", choices=OUTPUTS, default="gauss")
    p.add_argument(
        "--condition",
        choices=CONDITIONS,
        default="none",
        help="text: handwriting conditioned on each line's text (model.conditional.TextVRNN, Graves' window; the "
        "alphabet is model.text's default). It trains on whole lines (no --max-len crops: a crop would no longer "
        "match its text; a preset's max_len is ignored), drops the lines without text or with characters outside "
        "the alphabet (counted in the log), and uses the width as given, without parameter matching "
        "(default: %(default)s)",
    )
    g = p.add_argument_group("model (override the preset)")
    g.add_argument("--h-dim", type=int, help="LSTM units")
    g.add_argument("--z-dim", type=int, help="latent size")
    g.add_argument("--mlp-layers", type=int, help="hidden layers of every phi network")
    g.add_argument("--mlp-width", type=int, help="width of those layers (disables parameter matching)")
    g.add_argument("--n-components", type=int, help="mixture components (20)")
    g.add_argument("--std-floor", type=float, help="added to every softplus std")
    g.add_argument("--no-match-params", action="store_true", help="use the preset's width as is for every model")
    g.add_argument(
        "--window-components",
        type=int,
        help=f"--condition text: Gaussians of the attention window ({ModelConfig.window_components})",
    )
    t = p.add_argument_group("training")
    t.add_argument("--lr", type=float, help="Adam learning rate")
    t.add_argument("--batch-size", type=int)
    t.add_argument("--max-len", type=int, help="crop training sequences to random windows of this many frames")
    t.add_argument(
        "--point-stride",
        type=int,
        default=1,
        metavar="N",
        help="handwriting: thin each stroke to every N-th pen point (its first and last kept), a shorter line to "
        "step through; stored in the checkpoint's normalisation, so uploads are thinned the same way and its "
        "likelihoods are those of the thinned line (default: 1, every point, as the paper)",
    )
    t.add_argument("--chunk-seconds", type=float, help="speech: cut files into chunks of this length (0: whole files)")
    t.add_argument(
        "--recipe",
        choices=sorted(RECIPES),
        default="default",
        help="defaults for --init, --clip-grad, --clip-mode, --max-col-norm, --std-floor: 'cle' is the "
        "authors' recipe (U(-0.08, 0.08) init with orthogonal recurrent weights, per-parameter clip 5, "
        "max column norm 1.9365, std offset 1e-4); options given explicitly win (default: %(default)s)",
    )
    t.add_argument("--init", choices=INIT_SCHEMES, help="weight initialisation: default or cle (the authors')")
    t.add_argument(
        "--clip-grad", type=float, help=f"gradient norm clip, applied before step() ({defaults.CLIP_GRAD:g})"
    )
    t.add_argument(
        "--clip-mode",
        choices=("global", "per-tensor"),
        help="clip the norm of all gradients together (global) or of each parameter's (per-tensor, the authors')",
    )
    t.add_argument(
        "--max-col-norm",
        type=float,
        metavar="NORM",
        help="after each step, rescale every unit's incoming weight vector to norm <= NORM (the authors': "
        f"{defaults.CLE_MAX_COL_NORM}; 0 or absent: off)",
    )
    t.add_argument(
        "--free-bits",
        type=float,
        default=0.0,
        metavar="NATS",
        help="free bits against posterior collapse: the KL term optimised is max(NATS, KL per frame) "
        "(batch mean; --free-bits-mode dim: per latent dimension); logs and validation use the true ELBO (0: off)",
    )
    t.add_argument(
        "--free-bits-mode",
        choices=FREE_BITS_MODES,
        default="frame",
        help="floor the KL per frame (summed over z's dimensions) or each dimension's KL per frame (default: frame)",
    )
    t.add_argument(
        "--kl-warmup",
        type=int,
        default=0,
        metavar="STEPS",
        help="raise the KL term's weight linearly from 0 to 1 over STEPS steps against posterior collapse "
        "(0, the paper's setting: the plain ELBO from the start); validation always uses the ELBO",
    )
    t.add_argument(
        "--stateful",
        action="store_true",
        help="speech: train on consecutive chunks of the recordings, --batch-size parallel streams, the LSTM "
        "state carried from one chunk to the next (truncated backprop through time, as the authors trained "
        "on Blizzard); the state restarts each epoch",
    )
    t.add_argument("--max-steps", type=int, help="stop after this many optimiser steps")
    t.add_argument("--max-minutes", type=float, help="stop after this much wall time")
    t.add_argument("--eval-every", type=int, help="steps between validation passes")
    t.add_argument("--patience", type=int, default=10, help="validation passes without improvement before stopping")
    t.add_argument("--test-samples", type=int, default=defaults.NUM_IS_SAMPLES, help="K of the final IS estimate")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="auto", help="auto, cpu or cuda")
    t.add_argument("--threads", type=int, help="CPU threads (torch.set_num_threads)")
    t.add_argument("--resume", action="store_true", help="continue from PATH.resume.safetensors if it exists")
    t.add_argument(
        "--init-from",
        metavar="CKPT",
        help="start from the weights of CKPT (a checkpoint of the same model: family, output, sizes, condition), with "
        "a fresh optimiser and step count: to go on training a shipped checkpoint on a machine without its resume "
        "state (--resume, when that state exists, wins)",
    )
    t.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    args = p.parse_args(argv)

    preset = PRESETS.get(args.preset, {})
    args.modality = args.modality or preset.get("modality")
    if args.modality is None:
        p.error("--modality is required without a --preset")
    if preset and preset["modality"] != args.modality:
        p.error(f"preset {args.preset!r} is for {preset['modality']}, not {args.modality}")
    if args.condition == "text":
        if args.modality != "handwriting":
            p.error(f"--condition text is for handwriting, not {args.modality}")
        if args.max_len is not None:
            p.error("--condition text trains on whole lines: --max-len would crop the strokes away from their text")
        preset = {k: v for k, v in preset.items() if k != "max_len"}  # whole lines
    elif args.window_components is not None:
        p.error("--window-components is for --condition text")
    args.width_given = args.mlp_width is not None
    recipe = RECIPES[args.recipe]
    for key in ("init", "clip_grad", "clip_mode", "max_col_norm", "std_floor"):
        if getattr(args, key) is None and key in recipe:
            setattr(args, key, recipe[key])
    for key, default in OPTION_DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, preset.get(key, default))
    if args.max_col_norm is not None and args.max_col_norm < 0:
        p.error("--max-col-norm must be 0 (off) or positive")
    args.max_col_norm = args.max_col_norm or None
    if not (args.free_bits >= 0 and math.isfinite(args.free_bits)):
        p.error("--free-bits must be 0 or a positive number of nats")
    if args.chunk_seconds == 0:
        args.chunk_seconds = None
    if args.stateful and (args.modality != "speech" or args.chunk_seconds is None or args.max_len is not None):
        p.error("--stateful trains speech on consecutive chunks: it needs --chunk-seconds > 0 and no --max-len")
    if args.condition == "text" and args.init != "default":
        p.error(f"--condition text supports --init default only, got {args.init!r} (from --init or --recipe)")
    sizes = ("h_dim", "z_dim", "mlp_layers", "mlp_width", "n_components", "batch_size", "eval_every", "patience")
    if args.point_stride != 1 and args.modality != "handwriting":
        p.error("--point-stride is for handwriting")
    keys = (*sizes, "test_samples", "max_len", "max_steps", "threads", "window_components", "point_stride")
    for key in keys:  # None: not given
        if getattr(args, key) is not None and getattr(args, key) < 1:
            p.error(f"--{key.replace('_', '-')} must be positive")
    if args.kl_warmup < 0:
        p.error("--kl-warmup must be 0 or more")
    if not (args.lr > 0 and args.clip_grad > 0 and args.std_floor > 0):  # NaN fails these too
        p.error("--lr, --clip-grad and --std-floor must be positive")
    if not args.out.endswith(".safetensors"):
        p.error("--out must end in .safetensors")
    if args.device not in ("auto", "cpu", "cuda") and not args.device.startswith("cuda:"):
        p.error("--device must be auto, cpu or cuda")
    return TrainConfig(**vars(args))


def model_config(conf: TrainConfig) -> ModelConfig:
    cfg = ModelConfig(
        family=conf.family,
        output=conf.output,
        modality=conf.modality,
        x_dim=defaults.FRAME_SIZE if conf.modality == "speech" else defaults.HANDWRITING_DIM,
        z_dim=conf.z_dim,
        h_dim=conf.h_dim,
        mlp_layers=conf.mlp_layers,
        mlp_width=conf.mlp_width,
        n_components=conf.n_components,
        std_floor=conf.std_floor,
    )
    if conf.condition == "text":  # the width as given: the paper's matching is for the unconditional models
        text: dict[str, Any] = dict(alphabet=DEFAULT_ALPHABET)
        if conf.window_components is not None:
            text["window_components"] = conf.window_components
        return dataclasses.replace(cfg, **text)
    is_reference = cfg.family == "rnn" and cfg.output == "gauss"
    if conf.preset and not conf.width_given and not conf.no_match_params and not is_reference:
        reference = dataclasses.replace(cfg, family="rnn", output="gauss")
        cfg = dataclasses.replace(cfg, mlp_width=matched_width(cfg, reference))
    return cfg


# ----------------------------------------------------------------------------------- distributed


@dataclasses.dataclass
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: torch.device) -> Dist:
    """torchrun sets WORLD_SIZE/RANK: join the process group (NCCL on GPUs, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist()
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size())


def pick_device(name: str) -> torch.device:
    """The shared device rule; under torchrun a bare "cuda" means this rank's GPU (LOCAL_RANK)."""
    try:
        device = resolve_device(name)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    if name == "cuda" and "LOCAL_RANK" in os.environ:
        device = torch.device(f"cuda:{os.environ['LOCAL_RANK']}")
    return device


def kl_weight(step: int, warmup: int) -> float:
    """The KL term's weight at optimiser step `step` (0-based): step / warmup, reaching 1 at `warmup`."""
    return 1.0 if warmup <= 0 else min(1.0, (step + 1) / warmup)


def training_objective(out: Any, frames: torch.Tensor, beta: float, free_bits: float, mode: str) -> torch.Tensor:
    """What training minimises, nats per frame: the negative ELBO, with the KL term weighted by `beta`
    (KL warm-up) and, with free bits, floored: "frame" optimises max(free_bits, KL per frame), the
    batch's KL over its valid frames; "dim" floors each latent dimension's KL per frame separately
    (Kingma et al. 2016). Below the floor the KL gets no gradient, so the encoder can put that much
    information into z without being pulled back to the prior. beta = 1, free_bits = 0: -ELBO/frame."""
    nll = out.nll.sum() / frames
    if free_bits > 0 and out.kl_dims is not None:
        if mode == "dim":
            per_dim = out.kl_dims.sum(dim=(0, 1)) / frames  # (Z,)
            kl = torch.clamp(per_dim, min=free_bits).sum()
        else:
            kl = torch.clamp(out.kl.sum() / frames, min=free_bits)
    else:
        kl = out.kl.sum() / frames
    return nll + kl if beta == 1.0 else nll + beta * kl


def clip_gradients(model: torch.nn.Module, max_norm: float, mode: str = "global") -> torch.Tensor:
    """Clip before step(): the norm of all gradients together ("global"), or of each parameter's
    gradient separately ("per-tensor", the authors' cle GradientClipping). Returns the global norm
    before clipping (what the logs show)."""
    if mode == "global":
        return torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    params = [p for p in model.parameters() if p.grad is not None]
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
    for p in params:
        torch.nn.utils.clip_grad_norm_([p], max_norm)
    return total


DIVERGED = "diverged: {what} is not finite (NaN/Inf); lower --lr, raise --std-floor or check the data"


def any_rank(flag: bool, d: Dist) -> bool:
    """True on every rank if `flag` is True on any rank (so that all ranks leave the loop together)."""
    if d.world == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def agree(flag: bool, d: Dist) -> bool:
    """True on every rank if `flag` is True on rank 0 (rank 0 decides when to stop)."""
    if d.world == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    dist.broadcast(t, src=0)
    return bool(t.item())


# ----------------------------------------------------------------------------------- state files


@dataclasses.dataclass
class LoopState:
    """The loop's progress, saved at every validation pass: PATH.resume.json holds these fields (beside
    Adam's param_groups) and --resume continues from them."""

    step: int = 0  # optimiser steps taken
    best_valid_elbo: float | None = None
    best_step: int = 0
    bad_evals: int = 0  # validation passes since the best one
    minutes: float = 0.0  # wall time at the last validation pass, the runs before a --resume included
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # the log rows


def save_resume(conf: TrainConfig, model: VRNN | TextVRNN, opt: torch.optim.Optimizer, state: LoopState) -> None:
    """Weights, Adam's moments and the loop state, without pickle: tensors in safetensors, the rest in JSON."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt_state = opt.state_dict()
    for idx, s in opt_state["state"].items():
        for k, v in s.items():
            tensors[f"opt.{idx}.{k}"] = torch.as_tensor(v).detach().cpu().contiguous()
    weights, meta = conf.beside_out(".resume.safetensors"), conf.beside_out(".resume.json")
    save_file(tensors, str(weights.with_suffix(".tmp")))
    weights.with_suffix(".tmp").replace(weights)
    doc = {"param_groups": opt_state["param_groups"], **dataclasses.asdict(state)}
    meta.with_suffix(".tmp").write_text(json.dumps(doc, indent=1))
    meta.with_suffix(".tmp").replace(meta)


def init_weights(model: VRNN | TextVRNN, path: Path) -> None:
    """--init-from: the weights of the checkpoint at `path` into `model`; CheckpointError unless it is the same
    model."""
    theirs = ModelConfig.from_dict(read_metadata(path)["config"])
    if theirs != model.config:
        diff = sorted(k for k, v in theirs.to_dict().items() if model.config.to_dict().get(k) != v)
        raise CheckpointError(
            f"--init-from {path}: another model ({theirs.name}; differs in {', '.join(diff) or 'its fields'}); give "
            "the options it was trained with"
        )
    load_weights(model, _paths(path)[0])
    print(f"initialised from {path}", file=sys.stderr)


def load_resume(conf: TrainConfig, model: VRNN | TextVRNN, opt: torch.optim.Optimizer) -> LoopState | None:
    weights, meta = conf.beside_out(".resume.safetensors"), conf.beside_out(".resume.json")
    if not weights.exists() or not meta.exists():
        return None
    tensors = load_file(str(weights))
    doc = json.loads(meta.read_text())
    try:
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    except RuntimeError:  # another model's state (another family, width or --condition)
        raise CheckpointError(
            f"{weights}: the resume state is another model's, not this {model.config.name}'s; drop --resume or "
            "give the options it was trained with"
        ) from None
    state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, idx, name = k.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": doc.pop("param_groups")})
    return LoopState(**doc)


# ----------------------------------------------------------------------------------- texts

Texts = dict[str, list[str]]  # --condition text: each split's line texts, in the order of the corpus's lines


def with_texts(corpus: Corpus, alphabet: str) -> tuple[Corpus, Texts, dict[str, dict[str, Any]]]:
    """--condition text: the corpus reduced to the lines whose text the model can read (a text whose characters
    are all in `alphabet`, not empty, not too long), each split's texts in the same order, and per split what
    was dropped and why. The normalisation is the corpus's, fitted on all its training lines."""
    texts = corpus_texts(corpus)
    kept: dict[str, list[int]] = {}
    report: dict[str, dict[str, Any]] = {}
    for split, lines in texts.items():
        keep: list[int] = []
        no_text = unsupported = unusable = 0
        characters: dict[str, None] = {}
        for i, text in enumerate(lines):
            if text is None:
                no_text += 1
                continue
            try:
                encode(text, alphabet)
            except UnsupportedCharactersError as e:
                unsupported += 1
                characters.update(dict.fromkeys(e.characters))
                continue
            except ValueError:  # empty, or longer than a line the model reads
                unusable += 1
                continue
            keep.append(i)
        kept[split] = keep
        report[split] = {
            "lines": len(lines),
            "kept": len(keep),
            "no_text": no_text,
            "unsupported_characters": unsupported,
            "empty_or_too_long": unusable,
            "characters": "".join(characters),
        }
        if not keep:
            raise DataError(
                f"{corpus.root}: no {split} line has a text the model can read ({no_text} of {len(lines)} have no "
                f"text, {unsupported} characters outside the alphabet, {unusable} an empty or too long text); "
                "--condition text needs each line's text (model.data.texts)"
            )
    seqs = {split: [corpus.split(split)[i] for i in keep] for split, keep in kept.items()}
    names = {split: [corpus.names[split][i] for i in keep] for split, keep in kept.items()}
    reduced = dataclasses.replace(corpus, train=seqs["train"], valid=seqs["valid"], test=seqs["test"], names=names)
    return reduced, {split: [texts[split][i] or "" for i in keep] for split, keep in kept.items()}, report


def describe_dropped(report: dict[str, dict[str, Any]]) -> str:
    parts = []
    for split, r in report.items():
        dropped = r["lines"] - r["kept"]
        why = f"{r['no_text']} without text, {r['unsupported_characters']} with characters outside the alphabet"
        if r["characters"]:
            why += f" ({', '.join(repr(c) for c in r['characters'])})"
        if r["empty_or_too_long"]:
            why += f", {r['empty_or_too_long']} empty or too long"
        parts.append(f"{split}: dropped {dropped} of {r['lines']} lines" + (f" ({why})" if dropped else ""))
    return "text: " + "; ".join(parts)


@torch.no_grad()
def evaluate_split(
    model: VRNN | TextVRNN, corpus: Corpus, texts: Texts | None, split: str, **options: Any
) -> dict[str, Any]:
    """A split's figures (model.evaluate.evaluate_sequences), conditional on the lines' texts for a text model."""
    return evaluate_sequences(model, corpus.split(split), texts=None if texts is None else texts[split], **options)


# ----------------------------------------------------------------------------------- the loop


def batches(
    corpus: Corpus, conf: TrainConfig, d: Dist, texts: Texts | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor, list[str] | None]]:
    """Endless shuffled training batches, each rank on its own shard of the training split: (x, mask, lines),
    sequences cropped to random windows of --max-len frames; with texts (--condition text: whole lines), lines[b]
    is the text of row b, else None. The last partial batch of an epoch is dropped when the shard holds more
    than one batch."""
    shard = list(range(len(corpus.train)))[d.rank :: d.world]
    if not shard:
        raise DataError(f"rank {d.rank} of {d.world} has no training sequence")
    size = conf.batch_size
    epoch = 0
    while True:
        g = torch.Generator().manual_seed(conf.seed + 1000 * epoch + d.rank)
        if texts is None:  # what make_loader's DataLoader drew first (its workers' seed): the same shuffles, crops
            torch.empty((), dtype=torch.int64).random_(generator=g)
        order = [shard[j] for j in torch.randperm(len(shard), generator=g).tolist()]
        end = len(order) // size * size if len(order) > size else len(order)
        for i in range(0, end, size):
            rows = order[i : i + size]
            x, mask = pad_batch([corpus.train[j] for j in rows], conf.max_len, "random", g)
            yield x, mask, None if texts is None else [texts["train"][j] for j in rows]
        epoch += 1


def stream_batches(corpus: Corpus, conf: TrainConfig, d: Dist) -> Iterator[tuple[torch.Tensor, torch.Tensor, bool]]:
    """Endless batches for truncated backprop through time: the training chunks, recording by
    recording (in a shuffled order each epoch, chunks in time order), laid end to end as one stream
    that is cut into `batch_size` equal parts; batch n holds the n-th chunk of every part, so row b of
    batch n + 1 continues row b of batch n. Yields (x, mask, reset): reset is True on an epoch's first
    batch (the carried state must restart). Each rank streams its own share of the recordings."""
    import numpy as np

    by_file: dict[str, list[tuple[int, int]]] = {}
    for i, name in enumerate(corpus.names["train"]):
        path, _, k = name.rpartition("#")
        by_file.setdefault(path or name, []).append((int(k) if k.isdigit() else 0, i))
    files = sorted(by_file)[d.rank :: d.world]
    epoch = 0
    while True:
        order = np.random.default_rng(conf.seed + 1000 * epoch + d.rank).permutation(len(files))
        chunks = [i for j in order for _, i in sorted(by_file[files[j]])]
        rows = min(conf.batch_size, len(chunks))
        length = len(chunks) // rows
        for n in range(length):
            x, mask = pad_batch([corpus.train[chunks[b * length + n]] for b in range(rows)])
            yield x, mask, n == 0
        epoch += 1


def plot_curves(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    steps = [r["step"] for r in rows]
    a.plot(steps, [-r["train_loss_per_frame"] for r in rows], label="train ELBO / frame")
    valid = [(r["step"], r["valid_elbo_per_frame"]) for r in rows if r["valid_elbo_per_frame"] != ""]
    if valid:
        a.plot(*zip(*valid, strict=True), "o-", label="valid ELBO / frame")
    a.set_xlabel("step")
    a.set_ylabel("nats per frame (higher is better)")
    a.legend()
    b.plot(steps, [r["train_kl_per_frame"] for r in rows], color="tab:red")
    b.set_xlabel("step")
    b.set_ylabel("KL per frame (nats)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@dataclasses.dataclass
class Trainer:
    """What the train and validation steps share."""

    conf: TrainConfig
    model: VRNN | TextVRNN
    net: torch.nn.Module  # the model, or its DistributedDataParallel wrapper under torchrun
    opt: torch.optim.Optimizer
    corpus: Corpus
    d: Dist
    state: LoopState
    carried: tuple[torch.Tensor, torch.Tensor] | None = None  # --stateful: the LSTM state after the last batch
    # Since the last validation pass: (-ELBO, KL, frames, objective) per frame of each step
    window: list[tuple[float, float, int, float]] = dataclasses.field(default_factory=list)
    grad_norm: torch.Tensor | float = math.nan  # the last step's, before clipping
    texts: Texts | None = None  # --condition text: each split's line texts (with_texts)
    text_report: dict[str, dict[str, Any]] | None = None  # and what with_texts dropped


def train_step(t: Trainer, x: torch.Tensor, mask: torch.Tensor, reset: bool, texts: list[str] | None = None) -> bool:
    """One optimiser step on a batch (reset: it does not continue the last one, for --stateful; texts: the
    lines' texts, for --condition text): the gradient norm is clipped between backward() and step(), the max
    column norm applied after step(). Returns False, without a step, when the loss is not finite on some rank."""
    conf = t.conf
    t.model.train()
    out = t.net(x, mask, state=None if reset else t.carried) if texts is None else t.net(x, texts, mask)
    if conf.stateful:
        t.carried = (out.state[0].detach(), out.state[1].detach())  # truncated: no gradient into the past
    frames = mask.sum()
    neg_elbo = -out.elbo.sum() / frames  # nats per frame: a scale that does not depend on the batch
    beta = kl_weight(t.state.step, conf.kl_warmup)
    loss = training_objective(out, frames, beta, conf.free_bits, conf.free_bits_mode)
    if any_rank(not torch.isfinite(loss).item(), t.d):
        return False
    t.opt.zero_grad(set_to_none=True)
    loss.backward()
    t.grad_norm = clip_gradients(t.model, conf.clip_grad, conf.clip_mode)  # before step()
    t.opt.step()
    if conf.max_col_norm:
        max_col_norm_(t.model, conf.max_col_norm)  # after step(): the update may have stretched a unit
    t.state.step += 1
    t.window.append((neg_elbo.item(), (out.kl.sum() / frames).item(), int(frames), loss.item()))
    return True


def validate(t: Trainer, elapsed: float, show: Callable[[str], object]) -> bool:
    """Rank 0's validation pass: log a row (the means over the steps since the last pass, the valid ELBO),
    keep the best weights in --out, save the resume state and count the passes without improvement.
    Returns False when the validation ELBO is not finite."""
    conf, state, window = t.conf, t.state, t.window
    row: dict[str, Any] = {
        "step": state.step,
        "seconds": round(elapsed, 1),
        "train_loss_per_frame": sum(w[0] for w in window) / len(window),
        "train_kl_per_frame": sum(w[1] for w in window) / len(window),
        "train_objective_per_frame": sum(w[3] for w in window) / len(window),
        "grad_norm": float(t.grad_norm),
        "kl_weight": kl_weight(state.step - 1, conf.kl_warmup),  # the last step's
    }
    finite = True
    try:
        v = evaluate_split(t.model, t.corpus, t.texts, "valid", likelihood=False, batch_size=conf.batch_size, seed=1)
    except FloatingPointError:
        v = {"elbo": -math.inf, "elbo_per_frame": -math.inf, "kl_per_frame": ""}
        finite = False
    row.update(valid_elbo=v["elbo"], valid_elbo_per_frame=v["elbo_per_frame"], valid_kl_per_frame=v["kl_per_frame"])
    improved = finite and (state.best_valid_elbo is None or v["elbo"] > state.best_valid_elbo)
    if improved:
        state.best_valid_elbo, state.best_step, state.bad_evals = v["elbo"], state.step, 0
        meta = metadata(conf, t.model.config, t.corpus, state, partial=True, texts=t.text_report)
        save_checkpoint(t.model, Path(conf.out), metadata=meta)  # type: ignore[arg-type]  # a TextVRNN saves alike
    else:
        state.bad_evals += 1
    state.history.append(row)
    state.minutes = elapsed / 60
    save_resume(conf, t.model, t.opt, state)
    write_logs(state.history, conf, t.model.config)
    kl = row["valid_kl_per_frame"]
    show(
        f"step {state.step}: valid ELBO {v['elbo']:.2f} nats/seq ({v['elbo_per_frame']:.3f}/frame, "
        f"KL {kl if kl == '' else f'{kl:.4f}'}/frame){' *' if improved else ''}"
    )
    return finite


def train(conf: TrainConfig) -> int:
    tune_malloc()
    device = pick_device(conf.device)
    if conf.threads:
        torch.set_num_threads(conf.threads)
    d = setup_distributed(device)
    torch.manual_seed(conf.seed)
    out = Path(conf.out)
    corpus = load_corpus(conf.data, conf.modality, conf.chunk_seconds, conf.point_stride)
    cfg = model_config(conf)
    texts = text_report = None
    if cfg.takes_text:
        corpus, texts, text_report = with_texts(corpus, cfg.alphabet)
        if d.main:
            print(describe_dropped(text_report), file=sys.stderr)
    model: VRNN | TextVRNN = (build_text_model if cfg.takes_text else build_model)(cfg, init=conf.init).to(device)
    if isinstance(model, TextVRNN) and texts is not None:
        # The window starts at the training lines' mean pace, one character per mean points-per-character (what
        # made the alignment form early in trials, issue 10); it learns its own speed from there.
        speed = sum(map(len, texts["train"])) / sum(map(len, corpus.train))
        model.window.set_speed(speed)
        if d.main:
            print(f"window: starts at {1 / speed:.1f} pen points per character", file=sys.stderr)
    if conf.init_from:
        init_weights(model, Path(conf.init_from))
    opt = torch.optim.Adam(model.parameters(), lr=conf.lr)
    resumed = load_resume(conf, model, opt) if conf.resume else None
    if resumed is not None and d.main:
        print(f"resuming {out} at step {resumed.step}", file=sys.stderr)
    net: torch.nn.Module = model
    if d.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    t = Trainer(conf, model, net, opt, corpus, d, resumed or LoopState(), texts=texts, text_report=text_report)
    state = t.state

    if d.main:
        n_params = sum(p.numel() for p in model.parameters())
        print(
            f"{cfg.name} ({cfg.modality}): {n_params:,} parameters, mlp_width={cfg.mlp_width}; "
            f"{len(corpus.train)} training sequences; {d.world} process(es) on {device}",
            file=sys.stderr,
        )
    bar = None
    show: Callable[[str], object] = functools.partial(print, file=sys.stderr, flush=True)  # a background run's too
    if d.main and not conf.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=conf.max_steps, initial=state.step, unit="step", dynamic_ncols=True, file=sys.stderr)
        show = bar.write

    run_start = time.monotonic()
    start = run_start - 60 * state.minutes  # elapsed time counts the runs before a --resume
    frames_seen = 0
    stream: Iterator[tuple[torch.Tensor, torch.Tensor, bool, list[str] | None]]
    if conf.stateful:
        stream = ((x, m, reset, None) for x, m, reset in stream_batches(corpus, conf, d))
    else:
        stream = ((x, m, True, lines) for x, m, lines in batches(corpus, conf, d, texts))
    while True:
        x, mask, reset, lines = next(stream)
        if not train_step(t, x.to(device, non_blocking=True), mask.to(device, non_blocking=True), reset, lines):
            stop_reason = DIVERGED.format(what="the training loss")
            break
        elapsed = time.monotonic() - start
        if bar is not None:
            bar.update(1)
            frames_seen += t.window[-1][2] * d.world
            rate = frames_seen / max(time.monotonic() - run_start, 1e-9)
            bar.set_postfix(
                elbo_per_frame=f"{-t.window[-1][0]:.3f}", kl=f"{t.window[-1][1]:.3f}", frames_per_s=f"{rate:.0f}"
            )
        last = conf.max_steps is not None and state.step >= conf.max_steps
        timeout = conf.max_minutes is not None and elapsed / 60 >= conf.max_minutes
        if state.step % conf.eval_every == 0 or last or timeout:
            finite = validate(t, elapsed, show) if d.main else True
            t.window.clear()
            patience_out = d.main and state.bad_evals >= conf.patience
            reason = "max steps" if last else "max minutes" if timeout else "early stopping" if patience_out else None
            if not finite:
                reason = DIVERGED.format(what="the validation ELBO")
            if agree(reason is not None, d):
                stop_reason = reason or "rank 0 stopped"
                break
    if bar is not None:
        bar.close()
    if d.world > 1:
        dist.barrier()
    status = 0
    if d.main:
        if stop_reason.startswith("diverged"):
            print(f"error: stopped at step {state.step}: {stop_reason}", file=sys.stderr)
            status = 1
        if not out.exists():
            print(f"error: no checkpoint was written to {out}", file=sys.stderr)
            return 1
        finish(conf, corpus, state, stop_reason, device, texts, text_report)
        plot_curves(state.history, conf.beside_out(".curves.png"), f"{cfg.name} on {Path(conf.data).name}")
    if d.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return status


def metadata(
    conf: TrainConfig,
    cfg: ModelConfig,
    corpus: Corpus,
    state: LoopState,
    partial: bool,
    metrics: dict[str, Any] | None = None,
    texts: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The checkpoint's metadata; a text model's adds "condition" (the alphabet and the lines each split kept)."""
    summary = corpus.summary()
    condition = {"condition": {"kind": "text", "alphabet": cfg.alphabet, "lines": texts}} if cfg.takes_text else {}
    return {
        "modality": cfg.modality,
        "normalisation": corpus.stats.to_dict(),
        "sample_rate": defaults.SAMPLE_RATE if cfg.modality == "speech" else None,
        "frame_size": cfg.x_dim,
        "dataset": {
            **summary,
            "path": str(conf.data),
            "chunk_seconds": conf.chunk_seconds if cfg.modality == "speech" else None,
        },
        "training": {
            "preset": conf.preset,
            "steps": state.step,
            "best_step": state.best_step,
            "minutes": round(state.minutes, 2),
            "lr": conf.lr,
            "batch_size": conf.batch_size,
            "max_len": conf.max_len,
            "recipe": conf.recipe,
            "init": conf.init,
            "clip_grad": conf.clip_grad,
            "clip_mode": conf.clip_mode,
            "max_col_norm": conf.max_col_norm,
            "std_floor": conf.std_floor,
            "kl_warmup": conf.kl_warmup,
            "stateful": conf.stateful,
            "free_bits": conf.free_bits,
            "free_bits_mode": conf.free_bits_mode if conf.free_bits else None,
            "seed": conf.seed,
            "finished": not partial,
            **({"init_from": conf.init_from} if conf.init_from else {}),  # continued from another checkpoint
        },
        "metrics": metrics or {"valid_elbo": state.best_valid_elbo},
        **condition,
    }


def finish(
    conf: TrainConfig,
    corpus: Corpus,
    state: LoopState,
    reason: str,
    device: torch.device,
    texts: Texts | None = None,
    text_report: dict[str, dict[str, Any]] | None = None,
) -> None:
    """Reload the best weights, score the test split (ELBO and IS-K), and write the final metadata (a text
    model's figures are conditional on each line's text)."""
    out = Path(conf.out)
    model: VRNN | TextVRNN = (load_checkpoint if texts is None else load_text_checkpoint)(out, device=device)[0]
    stats = corpus.stats
    test = evaluate_split(
        model, corpus, texts, "test", stats=stats, num_samples=conf.test_samples, batch_size=conf.batch_size
    )
    valid = evaluate_split(
        model, corpus, texts, "valid", stats=stats, likelihood=False, batch_size=conf.batch_size, seed=1
    )
    metrics = {
        "space": "normalised (raw: the raw-data space)",
        "valid_elbo": valid["elbo"],
        "valid_elbo_per_frame": valid["elbo_per_frame"],
        "test_elbo": test["elbo"],
        "test_log_likelihood": test["log_likelihood"],
        "test_elbo_per_frame": test["elbo_per_frame"],
        "test_log_likelihood_per_frame": test["log_likelihood_per_frame"],
        "test_kl_per_frame": test["kl_per_frame"],
        "exact": test["exact"],
        "num_samples": test["num_samples"],
        "test_sequences": test["sequences"],
        "test_frames": test["frames"],
        "raw": test["raw"],
        "stopped": reason,
    }
    meta = metadata(conf, model.config, corpus, state, partial=False, metrics=metrics, texts=text_report)
    save_checkpoint(model, out, metadata=meta)  # type: ignore[arg-type]
    if texts is not None:
        write_text_styles(out, corpus, model.config.alphabet)
    print(json.dumps({"checkpoint": str(out), "name": model.config.name, **metrics}, indent=2))


def write_text_styles(out: Path, corpus: Corpus, alphabet: str) -> None:
    """A text model's named styles (model.styles): one line per writer of the test split, in NAME.styles.json beside
    the checkpoint (replacing what was there). Never fails the training: a problem is a warning."""
    try:
        styles = corpus_styles(corpus, alphabet, "test")
        if styles:
            add_styles(out, styles, alphabet, replace=True)
            print(f"styles: {', '.join(s.name for s in styles)} in {styles_path(out)}", file=sys.stderr)
    except (StylesError, DataError, OSError) as e:
        print(f"warning: no styles written beside {out}: {e}", file=sys.stderr)


def write_logs(rows: list[dict[str, Any]], conf: TrainConfig, cfg: ModelConfig) -> None:
    fields = list(dict.fromkeys(k for r in rows for k in r))  # rows of an older run may lack new columns
    with conf.beside_out(".log.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    doc = {"args": dataclasses.asdict(conf), "config": cfg.to_dict(), "history": rows}
    conf.beside_out(".log.json").write_text(json.dumps(doc, indent=1))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return train(args)
    except (DataError, CheckpointError, FloatingPointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1 if isinstance(e, FloatingPointError) else 2
    except KeyboardInterrupt:
        print(
            "interrupted: the best checkpoint so far and the resume state are on disk (use --resume)", file=sys.stderr
        )
        return 130


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
