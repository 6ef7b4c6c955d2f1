"""What the benchmarks share: the models (same seed for both sides), ONNX export, timing and the machine line."""
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))   # export_default_model, a script, not part of the installed camserve

import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
from export_default_model import export  # noqa: E402

THREADS = 2
SIZE = 224
CACHE = ROOT / ".cache" / "bench"


def build_model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return getattr(torchvision.models, name)(weights=None).eval()


def cached_export(model: torch.nn.Module, path: Path) -> Path:
    if not path.exists():
        export(model, path, SIZE)
    return path


def plain_session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def median_ms(fn, repeats: int, warmup: int = 1) -> float:
    """Median wall time of fn() in ms, after warm-up calls (which also build and cache any session)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def interleaved_ms(fns: dict, repeats: int, warmup: int = 1) -> dict:
    """Median wall time in ms of each fn, timed in rounds that call every fn once in turn: this VM's speed
    drifts by up to 2x between minutes, so only calls made side by side give fair ratios."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(values) for name, values in times.items()}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def peer_cells(row: dict) -> tuple[str, str, str]:
    """The peer's ms, the speed-up over it and the largest difference of a result row, '-' where absent."""
    diff = "-" if row["diff"] is None else f"{row['diff']:.1e}"
    if row["peer"] is None:
        return "-", "-", diff
    return f"{row['peer']:.1f}", f"{row['peer'] / row['ours']:.1f}x", diff
