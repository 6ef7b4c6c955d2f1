"""Every CAM method, registered by name: importing this package imports each of its modules, which fills
METHODS (a new method is one new file here and its test)."""
import importlib
import pkgutil

from .base import METHODS, Method, method

DEFAULT = "gradcam"   # the method a request that names none gets

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module != "base":
        importlib.import_module(f"{__name__}.{_module}")

__all__ = ["DEFAULT", "METHODS", "Method", "method"]
