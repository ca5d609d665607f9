"""The dispatch layer: where a forward runs, and the errors when it cannot run there."""

import numpy as np
import pytest
from numba import config

import lstm_numba as ln
from lstm_numba import dispatch

GPU_USABLE, GPU_REASON = dispatch.cuda_status()


class FakeCudaArray:
    """Looks like data on a GPU to the dispatch layer (it only reads the interface's presence)."""

    __cuda_array_interface__ = {"shape": (2, 3, 4), "typestr": "<f4", "data": (0, False)}
    shape, dtype, ndim = (2, 3, 4), np.dtype(np.float32), 3


def test_available_devices_says_what_and_why():
    devices = ln.available_devices()
    assert set(devices) == {"cpu", "cuda"}
    assert devices["cpu"].startswith("available: ")
    assert devices["cuda"] == f"{'available' if GPU_USABLE else 'unavailable'}: {GPU_REASON}"


def test_auto_follows_the_data():
    assert dispatch.select_device(np.zeros(3), "auto") == "cpu"
    if GPU_USABLE:
        assert dispatch.select_device(FakeCudaArray(), "auto") == "cuda"
    else:
        with pytest.raises(RuntimeError, match="device='cuda': "):
            dispatch.select_device(FakeCudaArray(), "auto")


def test_auto_never_picks_the_simulator(monkeypatch):
    monkeypatch.setattr(config, "ENABLE_CUDASIM", 1)
    usable, reason = dispatch.cuda_status()
    assert not usable and "NUMBA_ENABLE_CUDASIM=1" in reason
    assert dispatch.select_device(np.zeros(3), "auto") == "cpu"
    with pytest.raises(RuntimeError, match=r"device='cuda': Numba's CUDA simulator is enabled"):
        ln.LSTM(4, 3)(np.zeros((2, 3, 4), np.float32), device="cuda")


@pytest.mark.skipif(GPU_USABLE, reason="a GPU is usable here")
def test_cuda_without_a_gpu_names_the_reason():
    model = ln.LSTM(4, 3)
    reasons = r"device='cuda': (no usable CUDA GPU|numba-cuda is not)"
    with pytest.raises(RuntimeError, match=reasons):
        model(np.zeros((2, 3, 4), np.float32), device="cuda")
    with pytest.raises(RuntimeError, match="device='cuda'"):
        model.to("cuda")
    assert model._device_layers is None


def test_a_numba_cuda_too_old_for_this_numpy_is_named(monkeypatch):
    """numba-cuda 0.30.4 refers to ``np.row_stack``, which NumPy 2.5 removed: with NumPy 2.5 it
    compiles no kernel (seen on an H200 machine). The GPU path says so instead of failing there."""
    pytest.importorskip("numba_cuda")
    import importlib

    import_module = importlib.import_module

    def numpy_2_5(name, *args):
        if name == "numba.cuda.np.arrayobj":
            raise AttributeError("module 'numpy' has no attribute 'row_stack'")
        return import_module(name, *args)

    monkeypatch.setattr(importlib, "import_module", numpy_2_5)
    usable, reason = dispatch.cuda_status()
    assert not usable
    assert f"with NumPy {np.__version__} (AttributeError: module 'numpy' has no attribute" in reason
    with pytest.raises(RuntimeError, match="device='cuda': numba-cuda .* cannot compile kernels"):
        ln.LSTM(4, 3)(np.zeros((2, 3, 4), np.float32), device="cuda")


@pytest.mark.parametrize(
    "call, pattern",
    [
        (lambda m: m(np.zeros((2, 3, 4), np.float32), device="gpu"), "device: expected one of"),
        (lambda m: m(FakeCudaArray(), device="cpu"), "x is on a CUDA device"),
        (lambda m: m.to("tpu"), "device: expected 'cpu' or 'cuda', got 'tpu'"),
    ],
)
def test_bad_device_is_a_clear_error(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call(ln.LSTM(4, 3))
