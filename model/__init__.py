"""VRNN (Chung et al., NIPS 2015): models, objectives, sampling and latent analysis.

from model import ModelConfig, build_model, load_checkpoint, save_checkpoint
"""

__version__ = "0.1.0"

from .checkpoint import CheckpointError, load_checkpoint, read_metadata, save_checkpoint
from .config import ModelConfig
from .vrnn import VRNN, LatentAnalysis, VRNNOutput, build_model

__all__ = [
    "VRNN",
    "CheckpointError",
    "LatentAnalysis",
    "ModelConfig",
    "VRNNOutput",
    "__version__",
    "build_model",
    "load_checkpoint",
    "read_metadata",
    "save_checkpoint",
]
