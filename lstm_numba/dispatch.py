"""Where a forward runs: the CPU kernels (``cpu``) or the GPU kernels (``gpu``).

``device="auto"`` follows the data: arrays exposing ``__cuda_array_interface__`` (CuPy, torch CUDA
tensors, Numba device arrays) run on the GPU and come back as the same kind of array; NumPy arrays
run on the CPU (torch CPU tensors too: torch tensors out). ``device="cuda"`` also takes NumPy
input (copied over, NumPy out). Numba's CUDA simulator is never a device: ``cuda_status`` reports
it as unusable (the tests patch that to run the GPU kernels under it).
"""

import importlib
import importlib.metadata
import importlib.util
import os

import numpy as np
from numba import config

DEVICES = ("auto", "cpu", "cuda")


def cuda_status():
    """``(usable, reason)``: whether the GPU path can run here, and why (not)."""
    if config.ENABLE_CUDASIM:
        return False, "Numba's CUDA simulator is enabled (NUMBA_ENABLE_CUDASIM=1): for tests only"
    if importlib.util.find_spec("numba_cuda") is None:
        return False, "numba-cuda is not installed (pip install 'lstm-numba[cuda]')"
    from numba import cuda

    try:  # the module every kernel compile loads first: it fails where NumPy is too new for it
        importlib.import_module("numba.cuda.np.arrayobj")
    except Exception as error:  # any failure there leaves no kernel compilable
        numba_cuda = importlib.metadata.version("numba-cuda")
        return False, (
            f"numba-cuda {numba_cuda} cannot compile kernels with NumPy {np.__version__} "
            f"({type(error).__name__}: {error}); install a NumPy it supports or a newer numba-cuda"
        )
    if not cuda.is_available():
        error = str(cuda.cuda_error() or "no CUDA GPU found").strip().splitlines()
        return False, f"no usable CUDA GPU: {' '.join(line.strip() for line in error)}"
    device = cuda.get_current_device()
    name = device.name.decode() if isinstance(device.name, bytes) else device.name
    major, minor = device.compute_capability
    return True, f"{name} (compute capability {major}.{minor})"


def available_devices():
    """``{device: description}`` for "cpu" and "cuda": what the dispatch layer sees, and why."""
    usable, reason = cuda_status()
    return {
        "cpu": f"available: {config.NUMBA_NUM_THREADS} threads ({os.cpu_count()} cores)",
        "cuda": f"{'available' if usable else 'unavailable'}: {reason}",
    }


def is_gpu_array(value):
    """Whether ``value`` lives on a CUDA device (exposes ``__cuda_array_interface__``)."""
    return hasattr(value, "__cuda_array_interface__")


def select_device(x, device):
    """ "cpu" or "cuda" for input ``x`` and the requested ``device``; a clear error otherwise."""
    if device not in DEVICES:
        raise ValueError(f"device: expected one of {', '.join(DEVICES)}, got {device!r}")
    on_gpu = is_gpu_array(x)
    if device == "auto":
        device = "cuda" if on_gpu else "cpu"
    if device == "cpu" and on_gpu:
        raise ValueError(
            "device: 'cpu' was asked for but x is on a CUDA device; copy it to the host first "
            "or use device='auto'"
        )
    if device == "cuda":
        usable, reason = cuda_status()
        if not usable:
            raise RuntimeError(f"device='cuda': {reason}")
    return device


def to_device(value):
    """``value`` as a Numba device array: zero-copy for CUDA arrays, copied over for NumPy."""
    from numba import cuda

    if is_gpu_array(value):
        return cuda.as_cuda_array(value)
    return cuda.to_device(np.ascontiguousarray(value))


def to_host(value):
    """``value`` as a NumPy array, copied from the device when it lives there."""
    return to_device(value).copy_to_host() if is_gpu_array(value) else np.asarray(value)


def like_input(x, array):
    """A result ``array`` as the kind of array ``x`` is. From the CPU path (NumPy): a torch
    tensor for torch input (zero-copy), NumPy otherwise. From the GPU path (a Numba device
    array): CuPy → CuPy, torch → torch (both zero-copy, through ``__cuda_array_interface__``),
    NumPy → NumPy (copied back), otherwise the Numba device array itself."""
    if isinstance(array, np.ndarray) and isinstance(x, np.ndarray):
        return array  # the common case, before anything else
    module = type(x).__module__.split(".")[0]
    if isinstance(array, np.ndarray):
        if module == "torch":
            import torch

            return torch.from_numpy(array)
        return array
    if module == "cupy":
        import cupy

        return cupy.asarray(array)
    if module == "torch":
        import torch

        return torch.as_tensor(array, device=x.device)
    if isinstance(x, np.ndarray) or not is_gpu_array(x):
        return array.copy_to_host()
    return array
