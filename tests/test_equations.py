"""The scalar equations: accuracy against float64 libm, stability, and usability from user code."""

import importlib.util
import re
import warnings

import numba
import numpy as np
import pytest
from numba import njit

import lstm_numba as ln
from lstm_numba import cpu, equations
from lstm_numba._config import KERNEL_OPTIONS

GRID = np.concatenate(
    [
        np.linspace(-40.0, 40.0, 400_001),
        np.geomspace(1e-30, 40.0, 20_001),
        -np.geomspace(1e-30, 40.0, 20_001),
        [0.0, -0.0, 1e30, -1e30, 3000.0, -3000.0],
    ]
)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tanh_matches_numpy(dtype):
    x = GRID.astype(dtype)
    expected = np.tanh(x.astype(np.float64))
    actual = cpu.tanh(x)
    assert actual.dtype == dtype
    if dtype == np.float32:
        np.testing.assert_allclose(actual, expected, rtol=0, atol=3e-7)
        np.testing.assert_allclose(actual, expected, rtol=3e-7, atol=1e-37)
    else:
        np.testing.assert_allclose(actual, expected, rtol=1.5e-15, atol=1e-300)


def test_float32_tanh_on_every_seventh_float():
    """float32 tanh (``equations.tanh_rational``) over every 7th float32 in [1e-4, 9.5], where
    its rational approximation and rounding matter, and never beyond ±1."""
    first, last = np.array([1e-4, 9.5], np.float32).view(np.uint32)
    x = np.arange(first, last, 7, dtype=np.uint32).view(np.float32)
    expected = np.tanh(x.astype(np.float64))
    actual = cpu.tanh(x)
    np.testing.assert_allclose(actual, expected, rtol=3e-7, atol=0)
    assert np.all(np.abs(actual) <= 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_matches_scipy(dtype):
    from scipy.special import expit

    x = GRID.astype(dtype)
    expected = expit(x.astype(np.float64))
    atol = 2e-7 if dtype == np.float32 else 4e-16
    np.testing.assert_allclose(cpu.sigmoid(x), expected, rtol=0, atol=atol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("repeats", [1, 20])  # 5 and 100 elements: scalar and vector loops
def test_activations_saturate_and_propagate_nan(dtype, repeats):
    x = np.tile(np.array([np.inf, -np.inf, 1e4, -1e4, np.nan], dtype), repeats)
    with np.errstate(invalid="ignore"):  # the clamps raise the flag on NaN (next test)
        np.testing.assert_array_equal(cpu.tanh(x), np.tile([1, -1, 1, -1, np.nan], repeats))
        np.testing.assert_array_equal(cpu.sigmoid(x), np.tile([1, 0, 1, 0, np.nan], repeats))


@pytest.mark.filterwarnings("error")  # NaN in gives NaN out without NumPy's warning, as np.tanh
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("repeats", [1, 20])
def test_public_gates_take_nan_without_a_warning(dtype, repeats):
    z = np.tile(np.array([np.inf, -np.inf, 1e4, -1e4, np.nan], dtype), repeats)[:, None]
    h = np.zeros_like(z)
    weights, bias = np.array([[0, 1]], dtype), np.zeros(1, dtype)  # W·[h, x] + b = x
    expected_tanh = np.tile([1, -1, 1, -1, np.nan], repeats)[:, None]
    expected_sigmoid = np.tile([1, 0, 1, 0, np.nan], repeats)[:, None]
    np.testing.assert_array_equal(ln.candidate_memory(h, z, weights, bias), expected_tanh)
    np.testing.assert_array_equal(ln.forget_gate(h, z, weights, bias), expected_sigmoid)
    np.testing.assert_array_equal(ln.hidden_state(np.ones_like(z), z), expected_tanh)


def test_equations_callable_from_user_njit():
    @njit
    def user_cell(z, c_prev):
        return equations.lstm_cell(z[0], z[1], z[2], z[3], c_prev)

    z = np.array([0.3, -1.2, 0.7, 2.0])
    h, c = user_cell(z, 0.5)
    i, f, o = (1 / (1 + np.exp(-z[k])) for k in (0, 1, 3))
    g = np.tanh(z[2])
    assert c == pytest.approx(f * 0.5 + i * g, rel=1e-14)
    assert h == pytest.approx(o * np.tanh(f * 0.5 + i * g), rel=1e-14)


@pytest.mark.parametrize("dtype, division", [("float32", "divps"), ("float64", "divpd")])
def test_fused_step_is_vectorized(dtype, division):
    """The pointwise kernel's transcendental math must compile to packed SIMD divisions: a scalar
    loop costs ~7× more per element (float32: 27 against 4 ns a hidden unit)."""
    batch, hidden = 2, 8

    def zeros(*shape):
        return np.zeros(shape, dtype)

    args = [zeros(batch, 4 * hidden), zeros(batch, 4 * hidden), zeros(4 * hidden)]
    args += [None]  # the seed's cell
    args += [zeros(batch, hidden), zeros(batch, hidden), np.zeros(batch, np.int64)]
    args += [zeros(batch, 3, hidden), True]  # y, write_y
    options = {**KERNEL_OPTIONS, "cache": False}  # cached code cannot be inspected
    kernel = njit(**options)(cpu.lstm_step_pointwise.py_func)
    kernel(*args, 0, True, 0, None, 0)
    assembly = "\n".join(kernel.inspect_asm().values())
    assert re.search(rf"\bv?{division}\b", assembly), (
        "no packed division: the loop did not vectorize"
    )


with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # numba 0.68 deprecates its built-in numba.cuda
    from numba import cuda


def cuda_cell_kernel(z, c, h):
    """A CUDA kernel that calls the same scalar equations the CPU kernels inline."""
    j = cuda.grid(1)
    if j < c.size:
        h[j], c[j] = equations.lstm_cell(z[0, j], z[1, j], z[2, j], z[3, j], c[j])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_equations_compile_for_cuda(ptx_without_a_gpu, dtype):
    """The single source of the math compiles for the GPU too (PTX for sm_90, no GPU needed)."""
    if importlib.util.find_spec("numba_cuda") is None:  # Numba's own numba.cuda needs a driver
        pytest.skip("numba-cuda is not installed (pip install -e '.[test]')")
    real = getattr(numba, dtype)
    try:
        ptx, _ = cuda.compile_ptx(cuda_cell_kernel, (real[:, :], real[:], real[:]), cc=(9, 0))
    except Exception as error:  # no NVVM (CUDA toolkit) on this machine
        if "nvvm" in str(error).lower():
            pytest.skip(f"cannot compile for CUDA here: {error}")
        raise
    # One division per σ and tanh (3 σ + 2 tanh), nothing else; the equations' fast-math flags
    # (arcp, afn) let NVVM use the approximate division, as they let LLVM on the CPU.
    assert ptx.count("div.approx.f32" if dtype == "float32" else "div.rn.f64") == 5


@njit
def _activation_on_grid(kind, x, alpha, beta):
    out = np.empty_like(x)
    for k in range(x.size):
        out[k] = equations.activation(kind, x[k], alpha, beta)
    return out


@pytest.mark.parametrize("name", equations.ACTIVATIONS)
def test_each_onnx_activation_matches_its_definition(name):
    from lstm_numba.reference import ACTIVATIONS

    x = np.linspace(-30.0, 30.0, 6001)
    alpha, beta = 0.7, -0.3
    actual = _activation_on_grid(equations.ACTIVATIONS.index(name), x, alpha, beta)
    expected = ACTIVATIONS[name](x, alpha, beta)
    np.testing.assert_allclose(actual, expected, rtol=2e-15, atol=1e-15)


@njit
def _both_cells(z, c_prev):
    """(seed cell, ONNX cell with default options) on each row of z (N, 4) and c_prev (N,)."""
    out = np.empty((z.shape[0], 4))
    inf = np.inf
    for k in range(z.shape[0]):
        zi, zf, zg, zo = z[k]
        out[k, 0:2] = equations.lstm_cell(zi, zf, zg, zo, c_prev[k])
        out[k, 2:4] = equations.lstm_cell_onnx(
            zi, zf, zg, zo, c_prev[k], 0.0, 0.0, 0.0, inf, False,
            equations.SIGMOID, 0.0, 0.0, equations.TANH, 0.0, 0.0, equations.TANH, 0.0, 0.0,
        )  # fmt: skip
    return out


def test_onnx_cell_with_default_options_is_the_seed_cell(rng):
    """The same math to the last bits (each compiles on its own, so LLVM may fuse a multiply-add
    in one that it leaves apart in the other)."""
    out = _both_cells(rng.standard_normal((1000, 4)) * 4, rng.standard_normal(1000) * 4)
    np.testing.assert_allclose(out[:, 2:], out[:, :2], rtol=4e-15, atol=0)
