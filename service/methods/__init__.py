"""Every CAM method, registered by name; importing this package fills METHODS."""
from . import (ablation, fdcam, fullgrad, gradient, groupcam, integrative, recipro, rise, score,  # noqa: F401
               smooth)  # registration side effects
from .base import METHODS, Evidence, Method, Needs

__all__ = ["METHODS", "Evidence", "Method", "Needs"]
