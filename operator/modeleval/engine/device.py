"""Where a predicting process runs its models: the CPU, or a CUDA GPU through CuPy.

A GPU evaluation predicts in actors that hold a GPU each (:mod:`.scoring`); every batch is
moved to the device with ``cupy.asarray`` before the model sees it, so XGBoost's
``inplace_predict`` takes its device path instead of falling back to a DMatrix built from host
memory. The CUDA branch is chosen only where CuPy imports and a GPU is visible; everything
else (and every CPU evaluation) gets :data:`CPU`, whose :meth:`Device.put` hands the batch
through untouched.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


def cuda_visible() -> bool:
    """Whether this process can see an NVIDIA GPU (Ray sets CUDA_VISIBLE_DEVICES per task)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return os.path.exists("/dev/nvidiactl") and visible not in ("", "-1", "NoDevFiles")


def cuda_unavailable() -> str | None:
    """Why this process cannot predict on a GPU, or None when it can."""
    if not cuda_visible():
        return "no NVIDIA GPU is visible to the worker"
    try:
        import cupy
    except ImportError:
        return "CuPy is not installed in the worker's image"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:  # noqa: BLE001 - CUDA's own errors (driver, runtime mismatch)
        return f"CUDA is unusable: {str(error).splitlines()[0][:200]}"
    return None if count else "CUDA reports no device"


def machine_gpu_unavailable() -> str | None:
    """Why this machine has no GPU to measure or test on (None: nvidia-smi lists one). For
    benchmarks and tests, which decide before any worker starts."""
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return "nvidia-smi is not installed"
    try:
        subprocess.run(["nvidia-smi", "-L"], check=True, capture_output=True, timeout=30)
    except (subprocess.SubprocessError, OSError) as error:
        return f"nvidia-smi failed ({error})"
    return None


@dataclass(frozen=True)
class Device:
    """A process's prediction device: ``cpu`` or ``cuda``."""

    kind: str = "cpu"

    @property
    def cuda(self) -> bool:
        return self.kind == "cuda"

    @classmethod
    def select(cls, want_gpu: bool,
               probe: Callable[[], str | None] = cuda_unavailable) -> tuple["Device", str | None]:
        """The device for a process that asked for a GPU (``want_gpu``) or not, and, when it
        asked and gets the CPU, why (for the result's warnings)."""
        if not want_gpu:
            return CPU, None
        why = probe()
        return (CPU, why) if why else (CUDA, None)

    def put(self, batch: Any, device_arrays: bool) -> Any:
        """The batch where the model reads it: on the GPU for a model that takes device arrays
        (``device_arrays``), else as it is (onnxruntime's CUDA provider copies host input)."""
        if not (self.cuda and device_arrays):
            return batch
        import cupy

        return cupy.asarray(batch)


CPU = Device("cpu")
CUDA = Device("cuda")


def to_host(values: Any) -> Any:
    """A model's output as a host array: device arrays (CuPy) are copied back."""
    if hasattr(values, "__cuda_array_interface__"):
        return values.get()
    return values


def batches(count: int, batch_size: int) -> list[tuple[int, int]]:
    """The [start, stop) row ranges a shard of ``count`` rows is predicted in."""
    size = max(1, batch_size)
    return [(i, min(i + size, count)) for i in range(0, count, size)]
