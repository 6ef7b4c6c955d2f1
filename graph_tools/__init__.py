"""Pure ONNX -> ONNX transforms that make any image CNN explainable (no runtime imported here)."""
from .batch import fix_spatial_size, make_batch_dynamic
from .errors import GraphError
from .expose import expose
from .gradients import CLASS_WEIGHTS, GRAD_PREFIX, LOGITS, add_gradients, bias_terms, conv_blocks
from .graph import copy, fold_constants
from .hessian import HVP_PREFIX, add_hessian
from .model_info import SPLIT_HEAD, Layer, ModelInfo, classifier_weights, explainable, inspect, load
from .precision import has_float16, to_float32
from .quant import STE
from .reductions import MAP_PREFIX, MASS_PREFIX, RATIO, SHARE_PREFIX, add_plusplus_maps

__all__ = ["GraphError", "Layer", "ModelInfo", "inspect", "load", "make_batch_dynamic", "fix_spatial_size", "expose",
           "add_gradients", "bias_terms", "conv_blocks", "classifier_weights", "GRAD_PREFIX",
           "CLASS_WEIGHTS", "LOGITS", "copy", "fold_constants", "add_hessian", "HVP_PREFIX", "explainable",
           "SPLIT_HEAD", "has_float16", "to_float32", "STE", "add_plusplus_maps", "MAP_PREFIX", "SHARE_PREFIX",
           "MASS_PREFIX", "RATIO"]
