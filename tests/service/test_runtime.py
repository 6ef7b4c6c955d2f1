"""The CUDA probe: its model must load on every provider, or CUDA is silently never chosen."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort

from camserve.service.runtime import CPU, CUDA, cuda_works, default_providers, probe_model


def test_the_probe_model_runs_on_the_cpu_provider():
    # under onnx 1.23 a default make_model is IR 14, which ONNX Runtime 1.31 refuses: the probe then
    # failed on every machine and the server ran on the CPU beside an idle GPU
    session = ort.InferenceSession(probe_model().SerializeToString(), providers=[CPU])
    assert session.run(None, {"x": np.ones(1, np.float32)})[0] == 1


def test_cuda_is_chosen_exactly_where_a_cuda_session_starts():
    session = ort.InferenceSession(probe_model().SerializeToString(), providers=[CUDA, CPU])
    assert cuda_works() == (CUDA in session.get_providers())
    assert default_providers() == ([(CUDA, {"use_tf32": 0}), CPU] if cuda_works() else [CPU])
