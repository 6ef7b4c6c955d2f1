"""Typed run kinds: each owns its graphs (built through graph_tools), its session keys, its run and the
evidence it hands a method. A method declares one; the Explainer only calls it."""
from .base import (
                   ALL_KINDS,
                   Activations,
                   BiasGradient,
                   Classified,
                   Context,
                   ConvBlockMap,
                   NoisyGradients,
                   Probed,
                   ProbedGradients,
                   Result,
                   Run,
                   WholeNetwork,
                   WithGradients,
                   WithHessian,
                   top1,
)
from .forward import Classifier, Forward
from .gradients import ConvBlocks, FullGradients, Gradients
from .hessian import HessianGradients
from .inputs import InputMasks
from .noisy import NoisyCopies, noisy_copies
from .probe import Probe
from .tails import ChannelTail, MosaicTail

__all__ = ["ALL_KINDS", "Activations", "BiasGradient", "ChannelTail", "Classified", "Classifier", "Context",
           "ConvBlockMap", "ConvBlocks", "Forward", "FullGradients", "Gradients", "HessianGradients", "InputMasks",
           "MosaicTail",
           "NoisyCopies", "NoisyGradients", "Probe", "Probed", "ProbedGradients", "Result", "Run", "WholeNetwork",
           "WithGradients", "WithHessian", "noisy_copies", "top1"]
