"""The only place that creates ONNX Runtime sessions: provider choice, threads, and the bounded session cache."""
from __future__ import annotations

import collections
import contextvars
import functools
import threading
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from .numeric import count

# the run options of the calling thread's work: a server sets one whose `terminate` stops the work's runs
RUN_OPTIONS: contextvars.ContextVar[ort.RunOptions | None] = contextvars.ContextVar("run_options", default=None)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
# sessions a Runtime keeps (one model's): each holds a copy of the weights (MobileNetV2: about 30 MB), and the
# keys hold layers and input sizes that callers choose, so an unbounded cache grows with every new choice
MAX_SESSIONS = 16


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
    """Sessions built once per key (graph kind + layers) and reused; safe to share between threads.

    At most `max_sessions` are kept, the least recently used going first, except the first one built:
    the Explainer builds its plain forward graph first (in its constructor), and every predict and
    top-1 resolution runs it. A run holds its own reference, so evicting a session another thread is
    running on only drops the cache's: the session is freed when that run ends.
    """

    def __init__(self, providers: list[str] | None = None, threads: int | None = None,
                 max_sessions: int = MAX_SESSIONS):
        count(max_sessions, "max_sessions", "max_sessions")
        self.requested = list(providers) if providers else default_providers()
        self.threads, self.max_sessions = threads, max_sessions
        self._sessions: collections.OrderedDict[tuple, ort.InferenceSession] = collections.OrderedDict()
        self._kept: tuple | None = None   # the first key built: never evicted
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
        session = self._cached(key)
        if session is not None:
            return session
        with self._lock:  # one build lock per key: building one graph never blocks cached ones
            key_lock = self._building.setdefault(key, threading.Lock())
        try:
            with key_lock:
                session = self._cached(key)
                if session is None:
                    model = build()
                    session = ort.InferenceSession(model.SerializeToString(), self._options(),
                                                   providers=self.requested)
                    # ORT lists CUDA as available even without its libraries and silently falls back
                    self.providers = session.get_providers()
                    self._store(key, session)
                return session
        finally:
            with self._lock:   # the build locks would otherwise keep every key a client ever chose
                if self._building.get(key) is key_lock and not key_lock.locked():
                    del self._building[key]

    def _cached(self, key: tuple) -> ort.InferenceSession | None:
        with self._lock:
            session = self._sessions.get(key)
            if session is not None:
                self._sessions.move_to_end(key)
            return session

    def _store(self, key: tuple, session: ort.InferenceSession) -> None:
        with self._lock:
            if self._kept is None:
                self._kept = key
            while len(self._sessions) >= self.max_sessions:
                oldest = next((k for k in self._sessions if k != self._kept), None)
                if oldest is None:
                    break
                del self._sessions[oldest]
            self._sessions[key] = session

    def run(self, key: tuple, build: Callable[[], onnx.ModelProto], feeds: dict[str, np.ndarray]) -> dict:
        session = self.session(key, build)   # this reference keeps the session alive if it is evicted meanwhile
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, feeds, RUN_OPTIONS.get())))

    def cached_keys(self) -> list[tuple]:
        """The cached sessions' keys, least recently used first."""
        with self._lock:
            return list(self._sessions)
