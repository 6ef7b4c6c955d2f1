"""The CUDA probe (its model must load on every provider, or CUDA is silently never chosen); the session cache."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from camserve.service.runtime import CPU, CUDA, Runtime, cuda_works, default_providers, probe_model


def test_the_probe_model_runs_on_the_cpu_provider():
    # under onnx 1.23 a default make_model is IR 14, which ONNX Runtime 1.31 refuses: the probe then
    # failed on every machine and the server ran on the CPU beside an idle GPU
    session = ort.InferenceSession(probe_model().SerializeToString(), providers=[CPU])
    assert session.run(None, {"x": np.ones(1, np.float32)})[0] == 1


def test_cuda_is_chosen_exactly_where_a_cuda_session_starts():
    session = ort.InferenceSession(probe_model().SerializeToString(), providers=[CUDA, CPU])
    assert cuda_works() == (CUDA in session.get_providers())
    assert default_providers() == ([(CUDA, {"use_tf32": 0}), CPU] if cuda_works() else [CPU])


def _unbuildable():
    raise AssertionError("a cached session was built again")


def test_the_session_cache_drops_the_least_recently_used_but_never_the_first():
    runtime = Runtime([CPU], threads=1, max_sessions=3)
    for key in ("plain", "a", "b"):
        runtime.session((key,), probe_model)
    assert runtime.cached_keys() == [("plain",), ("a",), ("b",)]
    runtime.session(("a",), _unbuildable)   # a hit: a becomes the most recent
    runtime.session(("c",), probe_model)    # full: b, the least recently used, goes
    assert runtime.cached_keys() == [("plain",), ("a",), ("c",)]
    assert runtime.run(("plain",), _unbuildable, {"x": np.ones(1, np.float32)})["y"] == 1
    runtime.session(("d",), probe_model)
    assert runtime.cached_keys() == [("c",), ("plain",), ("d",)]
    for key in ("e", "f", "g"):   # the first session built (the Explainer's plain forward graph) stays
        runtime.session((key,), probe_model)
    assert runtime.cached_keys() == [("plain",), ("f",), ("g",)]
    assert runtime._building == {}, "build locks were kept for keys no longer cached"


def test_an_evicted_session_still_runs_for_whoever_holds_it():
    runtime = Runtime([CPU], threads=1, max_sessions=2)
    runtime.session(("plain",), probe_model)
    held = runtime.session(("a",), probe_model)   # as Runtime.run holds the session of a run in progress
    runtime.session(("b",), probe_model)
    assert ("a",) not in runtime.cached_keys()
    assert held.run(None, {"x": np.full(1, 3, np.float32)})[0] == 3


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, None])
def test_the_session_budget_is_a_positive_integer(bad):
    with pytest.raises(ValueError):
        Runtime([CPU], max_sessions=bad)
