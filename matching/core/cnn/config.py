"""How this process runs the CNN: where its files live, TensorFlow's threads, the arithmetic.

``matching.core`` reads no environment variable (docs/coding-habits.md): the
caller fills this once per process. The service does it from
``imgprotect/settings.py`` (``matching.engine.cnn_config``), a Spark executor
from the job's arguments (``spark.compute.JobOptions``), a command-line tool
from its flags. Nothing here imports TensorFlow.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

__all__ = ["PRECISIONS", "CnnConfig", "configure", "current"]

# Arithmetic of the convolutions: "bfloat16" (oneDNN's mixed precision: convolutions in bfloat16,
# accumulation and the head in float32), "float32", or "auto" (default): bfloat16 where the CPU
# has native bfloat16 instructions (AVX512_BF16 or AMX), float32 elsewhere. On this project's
# machine bfloat16 doubles bulk throughput (77 -> 154 images/s a core, model only) and moves an
# embedding by a mean cosine of 0.001 (min 0.005) from float32; every figure in
# docs/benchmarks.md section 4 was measured with it. Training and the port check run float32.
PRECISIONS = ("auto", "bfloat16", "float32")


@dataclass(frozen=True)
class CnnConfig:
    """The CNN's settings for one process; the defaults suit a command run from the repository root."""

    # Holds models/efficientnet_lite0_imagenet.npz (the converted backbone weights).
    data_dir: Path = Path("var")
    # TensorFlow's intra- and inter-op pools: 1 = one worker process per core.
    tf_threads: int = 1
    precision: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        if isinstance(self.tf_threads, bool) or not isinstance(self.tf_threads, int) or self.tf_threads < 1:
            raise ValueError(f"tf_threads must be a positive integer, got {self.tf_threads!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")


_lock = threading.Lock()
_current = CnnConfig()


def configure(config: CnnConfig | None = None, **changes: Any) -> CnnConfig:
    """Set this process's CNN settings (``config``, then ``changes`` on top); returns them.

    The thread pools and the arithmetic take effect when TensorFlow is first
    configured (``embedder.configure_tf_threads``), so set them before the
    first model is built; ``data_dir`` applies to every later lookup.
    """
    global _current
    with _lock:
        _current = replace(config or _current, **changes)
        return _current


def current() -> CnnConfig:
    """This process's CNN settings."""
    return _current
