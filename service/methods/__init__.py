"""Every CAM method, registered by name; importing this package fills METHODS."""
from . import fullgrad, gradient, integrative, smooth  # noqa: F401 -- registration side effects
from .base import METHODS, Evidence, Method, Needs

__all__ = ["METHODS", "Evidence", "Method", "Needs"]
