"""camserve runtime: Explainer over ONNX Runtime sessions of rewritten graphs, methods, image I/O, CLI."""
from .errors import BadRequest
from .explainer import Explainer, Explanation

__all__ = ["BadRequest", "Explainer", "Explanation"]
