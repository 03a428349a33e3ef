"""webmm_lab: the helper package of the course "Web-Scale Multimodal Deep Learning".

One home for every piece the notebooks build: device and profiles, the training loop,
checkpoints, claims, data sets, lab checks and plots. Notebooks import from here.
"""
from .batches import random_batches
from .claims import Baseline, ClaimFailed, ClaimRefused, Claims, IdentityFailed, check_identity
from .device import amp_dtype, autocast, describe, evaluating, grad_scaler, pick_device, seed_everything
from .profiles import active_profile, notebook_seed, pick
from .settings import PROFILES, ProfileError, settings
from .train import History, train

__version__ = "0.1.0"

__all__ = ["Baseline", "Claims", "ClaimFailed", "ClaimRefused", "IdentityFailed", "check_identity", "amp_dtype", "autocast", "describe",
           "evaluating", "grad_scaler", "pick_device", "seed_everything", "PROFILES", "ProfileError", "active_profile",
           "notebook_seed", "pick", "settings",
           "History", "random_batches", "train", "__version__"]
