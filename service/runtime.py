"""The only place that creates ONNX Runtime sessions: provider choice, threads, and the session cache."""
from __future__ import annotations

import contextvars
import functools
import threading
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

# the run options of the calling thread's work: a server sets one whose `terminate` stops the work's runs
RUN_OPTIONS: contextvars.ContextVar[ort.RunOptions | None] = contextvars.ContextVar("run_options", default=None)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


def probe_model() -> onnx.ModelProto:
    """An Identity graph at an IR version and opset every supported ONNX Runtime loads: onnx's own
    defaults (IR 14 under onnx 1.23) are newer than ONNX Runtime 1.31 reads, which made every probe fail."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [x], [y])
    return helper.make_model(graph, ir_version=8, opset_imports=[helper.make_opsetid("", 13)])


@functools.lru_cache(maxsize=1)
def cuda_works() -> bool:
    """Whether a CUDA session really starts (the GPU wheel lists CUDA even without its libraries)."""
    if CUDA not in ort.get_available_providers():
        return False
    ort.set_default_logger_severity(4)  # the failed CUDA load would print an error line per session
    try:
        session = ort.InferenceSession(probe_model().SerializeToString(), providers=[CUDA, CPU])
        return CUDA in session.get_providers()
    except Exception:
        return False
    finally:
        ort.set_default_logger_severity(2)


def default_providers() -> list:
    # TF32 (ORT's CUDA default) moves maps by 1.4e-3 to 4.6e-2 from the CPU's on MobileNetV2; full fp32
    # brings them to about 1e-6 at no measurable cost on an H100 (bench/gpu.py)
    return [(CUDA, {"use_tf32": 0}), CPU] if cuda_works() else [CPU]


class Runtime:
    """Sessions built once per key (graph kind + layers) and reused; safe to share between threads."""

    def __init__(self, providers: list[str] | None = None, threads: int | None = None):
        self.requested = list(providers) if providers else default_providers()
        self.threads = threads
        self._sessions: dict[tuple, ort.InferenceSession] = {}
        self._lock = threading.Lock()
        self._building: dict[tuple, threading.Lock] = {}
        self.providers: list[str] = []

    def _options(self) -> ort.SessionOptions:
        options = ort.SessionOptions()
        if self.threads:
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # no CPU arena: each cached session would keep its largest run's memory (a Score-CAM chunk
        # of 32 images) for good; plain allocation is as fast here and Score-CAM's peak drops 18%
        options.enable_cpu_mem_arena = False
        # threads spin inside a run but not after it: a method alternating sessions (forward, then a
        # tail) would otherwise have the idle session's threads spinning against the busy one's
        options.add_session_config_entry("session.force_spinning_stop", "1")
        return options

    def session(self, key: tuple, build: Callable[[], onnx.ModelProto]) -> ort.InferenceSession:
        session = self._sessions.get(key)
        if session is not None:
            return session
        with self._lock:  # one build lock per key: building one graph never blocks cached ones
            key_lock = self._building.setdefault(key, threading.Lock())
        with key_lock:
            session = self._sessions.get(key)
            if session is None:
                model = build()
                session = ort.InferenceSession(model.SerializeToString(), self._options(),
                                               providers=self.requested)
                # ORT lists CUDA as available even without its libraries and silently falls back
                self.providers = session.get_providers()
                self._sessions[key] = session
            return session

    def run(self, key: tuple, build: Callable[[], onnx.ModelProto], feeds: dict[str, np.ndarray]) -> dict:
        session = self.session(key, build)
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, feeds, RUN_OPTIONS.get())))

    def cached_keys(self) -> list[tuple]:
        return list(self._sessions)
