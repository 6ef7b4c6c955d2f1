"""camserve: Class Activation Map explanations for any ONNX image CNN, on ONNX Runtime, served over gRPC.

One import name for the whole distribution: `camserve.graph_tools` (pure ONNX -> ONNX transforms),
`camserve.service` (the runtime, methods, metrics, server, client and CLI) and `camserve.v1` (the
generated gRPC modules of proto/camserve/v1). The common entry points are re-exported here, loaded on
first use so that `import camserve.v1` stays light.
"""
from __future__ import annotations

__version__ = "0.2.0"

__all__ = ["Client", "Explainer", "Explanation", "Model", "BadRequest", "__version__"]

_EXPORTS = {"Explainer": "camserve.service.explainer", "Explanation": "camserve.service.explainer",
            "Model": "camserve.service.model", "Client": "camserve.service.client",
            "BadRequest": "camserve.service.errors"}


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'camserve' has no attribute {name!r}")
