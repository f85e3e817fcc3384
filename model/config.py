"""ModelConfig: everything needed to rebuild a model, stored in every checkpoint."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from . import defaults

FAMILIES = ("rnn", "vrnn-i", "vrnn")
OUTPUTS = ("gauss", "gmm")
MODALITIES = ("speech", "handwriting")

# Display names as in the paper's Table 1.
_FAMILY_NAMES = {"rnn": "RNN", "vrnn-i": "VRNN-I", "vrnn": "VRNN"}
_OUTPUT_NAMES = {"gauss": "Gauss", "gmm": "GMM"}


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of one model.

    family:      "rnn" (no latent variable), "vrnn-i" (fixed N(0, I) prior), "vrnn" (prior from h_{t-1}).
    output:      "gauss" (one Gaussian) or "gmm" (mixture of `n_components`).
    modality:    "speech" (x_t in R^x_dim, diagonal Gaussians) or "handwriting"
                 (x_t = (dx, dy, pen): bivariate Gaussian(s) with correlation times a Bernoulli pen bit).
    mlp_layers:  hidden ReLU layers of every phi network (paper: 4 for speech, 1 for handwriting).
    mlp_width:   width of those layers.
    std_floor:   added to every softplus std.
    alphabet:    the characters a text-conditioned handwriting model writes (model.conditional.TextVRNN);
                 empty (the default): the paper's unconditional models.
    window_components: Gaussians of the text model's attention window (Graves 2013, Eq. 46).
    """

    family: str = "vrnn"
    output: str = "gauss"
    x_dim: int = defaults.FRAME_SIZE
    z_dim: int = 64
    h_dim: int = 512
    mlp_layers: int = 2
    mlp_width: int = 512
    n_components: int = defaults.N_COMPONENTS
    modality: str = "speech"
    std_floor: float = defaults.STD_FLOOR
    alphabet: str = ""
    window_components: int = 10

    def __post_init__(self) -> None:
        problems = []
        if self.family not in FAMILIES:
            problems.append(f"family must be one of {FAMILIES}, got {self.family!r}")
        if self.output not in OUTPUTS:
            problems.append(f"output must be one of {OUTPUTS}, got {self.output!r}")
        if self.modality not in MODALITIES:
            problems.append(f"modality must be one of {MODALITIES}, got {self.modality!r}")
        if self.modality == "handwriting" and self.x_dim != defaults.HANDWRITING_DIM:
            problems.append(f"handwriting needs x_dim={defaults.HANDWRITING_DIM} (dx, dy, pen), got {self.x_dim}")
        for name in ("x_dim", "z_dim", "h_dim", "mlp_width", "n_components"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                problems.append(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.mlp_layers, int) or self.mlp_layers < 1:
            problems.append(f"mlp_layers must be an integer >= 1, got {self.mlp_layers!r}")
        if not (isinstance(self.std_floor, (int, float)) and self.std_floor > 0):
            problems.append(f"std_floor must be a positive number, got {self.std_floor!r}")
        if self.alphabet:
            if self.modality != "handwriting":
                problems.append("a text alphabet is for handwriting models only")
            if not isinstance(self.alphabet, str) or len(set(self.alphabet)) != len(self.alphabet):
                problems.append("alphabet must be a string of distinct characters")
            if not isinstance(self.window_components, int) or self.window_components < 1:
                problems.append(f"window_components must be a positive integer, got {self.window_components!r}")
        if problems:
            raise ValueError("invalid ModelConfig: " + "; ".join(problems))

    @property
    def has_latent(self) -> bool:
        return self.family != "rnn"

    @property
    def takes_text(self) -> bool:
        return bool(self.alphabet)

    @property
    def name(self) -> str:
        """The paper's name for this model, e.g. "VRNN-GMM"; "Text-VRNN-GMM" for a text-conditioned one."""
        name = f"{_FAMILY_NAMES[self.family]}-{_OUTPUT_NAMES[self.output]}"
        return f"Text-{name}" if self.alphabet else name

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe fields; the text fields only for a text model (unconditional configs read as before)."""
        out = dataclasses.asdict(self)
        if not self.alphabet:
            del out["alphabet"], out["window_components"]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        if not isinstance(data, dict):
            raise ValueError(f"a model config must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model config keys {unknown}; known keys are {sorted(known)}")
        return cls(**data)
