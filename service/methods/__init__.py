"""Every CAM method, registered by name: importing this package imports each of its modules, which fills
METHODS (a new method is one new file here and its test)."""
import importlib
import pkgutil

from ..errors import BadRequest
from .base import METHODS, Method, method

DEFAULT = "gradcam"   # the method a request that names none gets

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module != "base":
        importlib.import_module(f"{__name__}.{_module}")



def lookup(name: str, field: str = "method") -> Method:
    """The registered method `name`, or BadRequest on `field` listing the methods there are."""
    if name not in METHODS:
        raise BadRequest(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}", field)
    return METHODS[name]


__all__ = ["DEFAULT", "METHODS", "Method", "lookup", "method"]
