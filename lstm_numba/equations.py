"""The seed's equations on scalars: the single source of truth for every compile target.

Each function is an ``@njit`` function that LLVM inlines into the kernels that call it
(``forceinline``); a ``@cuda.jit`` kernel calls it as a device function, which NVVM inlines. CPU and
CUDA kernels call the same functions, so the math below is written once. Keep it to plain
arithmetic and comparisons that every target compiles.

Every function computes in its arguments' precision: float32 inputs give float32 math, which
vectorizes twice as wide as float64.
"""

import math

from numba import njit

from lstm_numba._config import EQUATION_OPTIONS

TANH_SATURATION = 20.0
"""Beyond ±20, tanh(x) is ±1 to float64 precision (1 - tanh(20) ≈ 8.5e-18)."""


@njit(**EQUATION_OPTIONS)
def tanh(x):
    """tanh(x) in x's own precision, as branch-free arithmetic that vectorizes.

    Numba 0.68 has no SVML, so ``math.tanh`` stays a scalar libm call (40–50 ns an element).
    float32 arguments get ``tanh_rational``, float64 ones ``tanh_series``.
    """
    if is_single_precision(x):
        return tanh_rational(x)
    return tanh_series(x)


@njit(**EQUATION_OPTIONS)
def is_single_precision(x):
    """Whether x is a float32: arithmetic on constants that the compiler folds, so the caller's
    untaken branch is removed (Numba has no compile-time type test inside jitted code; this one
    works on every target, plain Python included)."""
    real = type(x)
    return real(1.0) + real(2.0**-30) == real(1.0)


@njit(**EQUATION_OPTIONS)
def saturate(x, bound):
    """x clamped to [-bound, bound], NaN kept: each bound is a comparison that NaN fails, which
    LLVM compiles to one x86 (vector) max or min whose NaN operand comes out, two instructions
    where a clamp that keeps NaN by testing for it took five (the fused pointwise pass ran 1.2×
    faster; docs/performance.md, item 36). The max and min raise the floating-point "invalid"
    flag on NaN, which NumPy reports as a warning from the ufuncs; the public gate functions
    silence it (``gates._elementwise``), as ``np.tanh`` raises none."""
    low = -bound
    x = low if x < low else x
    return bound if x > bound else x


@njit(**EQUATION_OPTIONS)
def tanh_rational(x):
    """tanh(x) for float32: a 13/6-degree rational minimax approximation on [-9, 9] (the
    coefficients of Eigen's ``generic_fast_tanh_float``), ±1 beyond. Eleven multiply-adds and one
    division, 2.3× faster than ``tanh_series`` in float32. NaN passes through the clamps.
    Error: ≤ 3e-7 absolute and relative (≤ 5 units in the last place; checked over every float32
    in [1e-4, 9.5]), and never beyond ±1.
    """
    real = type(x)
    x = saturate(x, real(9.0))
    x2 = x * x
    p = real(-2.76076847742355e-16)
    p = p * x2 + real(2.00018790482477e-13)
    p = p * x2 + real(-8.60467152213735e-11)
    p = p * x2 + real(5.12229709037114e-08)
    p = p * x2 + real(1.48572235717979e-05)
    p = p * x2 + real(6.37261928875436e-04)
    p = p * x2 + real(4.89352455891786e-03)
    q = real(1.19825839466702e-06)
    q = q * x2 + real(1.18534705686654e-04)
    q = q * x2 + real(2.26843463243900e-03)
    q = q * x2 + real(4.89352518554385e-03)
    return saturate(x * (p / q), real(1.0))  # rounding may overshoot ±1 by an ulp or two


@njit(**EQUATION_OPTIONS)
def tanh_series(x):
    """tanh(x) to float64 precision, as branch-free arithmetic that vectorizes.

    The clamped argument is scaled by 2⁻⁵, sinh and cosh of the small argument come from their
    Taylor series (truncation error < 1e-16 for |y| ≤ 0.625), and five doublings
    sinh 2y = 2 sinh y cosh y, cosh 2y = sinh²y + cosh²y bring them back; one division at the end.
    Each doubling adds one rounding and does not amplify earlier ones, and cosh stays ≤ cosh 20,
    so nothing overflows. NaN passes through the clamp. Error: ≤ 1.1e-15 relative
    (float64).
    """
    real = type(x)  # constants in x's precision: a float64 literal would promote float32 math
    y = saturate(x, real(TANH_SATURATION)) * real(1.0 / 32.0)
    y2 = y * y
    s = y * (
        real(1.0)
        + y2
        * (
            real(1.0 / 6)
            + y2
            * (
                real(1.0 / 120)
                + y2
                * (
                    real(1.0 / 5040)
                    + y2
                    * (
                        real(1.0 / 362880)
                        + y2 * (real(1.0 / 39916800) + y2 * real(1.0 / 6227020800))
                    )
                )
            )
        )
    )
    c = real(1.0) + y2 * (
        real(1.0 / 2)
        + y2
        * (
            real(1.0 / 24)
            + y2
            * (
                real(1.0 / 720)
                + y2
                * (
                    real(1.0 / 40320)
                    + y2
                    * (
                        real(1.0 / 3628800)
                        + y2 * (real(1.0 / 479001600) + y2 * real(1.0 / 87178291200))
                    )
                )
            )
        )
    )
    two = real(2.0)
    s, c = two * s * c, s * s + c * c
    s, c = two * s * c, s * s + c * c
    s, c = two * s * c, s * s + c * c
    s, c = two * s * c, s * s + c * c
    s, c = two * s * c, s * s + c * c
    return s / c


@njit(**EQUATION_OPTIONS)
def sigmoid(x):
    """σ(x) = 1 / (1 + e⁻ˣ), computed as ½·tanh(x/2) + ½ in x's precision (absolute error
    ≤ 1.5e-7 in float32, ≤ 4e-16 in float64; relative accuracy is lost where σ underflows to
    the rounding of ½ + ½·tanh, e.g. below x ≈ -17 in float32)."""
    half = type(x)(0.5)
    return half * tanh(half * x) + half


@njit(**EQUATION_OPTIONS)
def cell_update(f, c_prev, i, c_tilde):
    """C = f ⊙ C_prev + i ⊙ C̃: the forget gate filters the old memory, the input gate the new."""
    return f * c_prev + i * c_tilde


@njit(**EQUATION_OPTIONS)
def hidden_state(o, c):
    """h = o ⊙ tanh(C): the output gate filters the squashed cell state."""
    return o * tanh(c)


@njit(**EQUATION_OPTIONS)
def lstm_gates(z_i, z_f, z_g, z_o, c_prev):
    """One hidden unit of one step from its four gate pre-activations ``W·[h, x] + b``, every
    intermediate value: f = σ(z_f), i = σ(z_i), C̃ = tanh(z_g), C = f ⊙ C_prev + i ⊙ C̃,
    o = σ(z_o), h = o ⊙ tanh(C). Returns ``(f, i, C̃, o, C, h)``.
    """
    f = sigmoid(z_f)
    i = sigmoid(z_i)
    c_tilde = tanh(z_g)
    c = cell_update(f, c_prev, i, c_tilde)
    o = sigmoid(z_o)
    return f, i, c_tilde, o, c, hidden_state(o, c)


@njit(**EQUATION_OPTIONS)
def lstm_cell(z_i, z_f, z_g, z_o, c_prev):
    """``lstm_gates``, keeping what the next step needs: ``(h, C)``."""
    _, _, _, _, c, h = lstm_gates(z_i, z_f, z_g, z_o, c_prev)
    return h, c


# ONNX's extensions of the cell (onnx/defs/rnn/defs.cc): configurable activations, peepholes, clip,
# coupled input-forget gate. The kernels fall back to these only when a model uses them.

ACTIVATIONS = (
    "sigmoid",
    "tanh",
    "relu",
    "hardsigmoid",
    "leakyrelu",
    "thresholdedrelu",
    "scaledtanh",
    "affine",
    "elu",
    "softsign",
    "softplus",
)
"""Activation names as ONNX spells them (lower case); a kernel receives the index into this."""

(
    SIGMOID,
    TANH,
    RELU,
    HARD_SIGMOID,
    LEAKY_RELU,
    THRESHOLDED_RELU,
    SCALED_TANH,
    AFFINE,
    ELU,
    SOFTSIGN,
    SOFTPLUS,
) = range(len(ACTIVATIONS))


@njit(**EQUATION_OPTIONS)
def activation(kind, x, alpha, beta):
    """The ONNX activation ``ACTIVATIONS[kind]`` at x; alpha and beta as ONNX defines them (unused
    by the functions that take none). All arguments but ``kind`` in one float precision."""
    real = type(x)
    zero = real(0.0)
    one = real(1.0)
    if kind == SIGMOID:
        return sigmoid(x)
    if kind == TANH:
        return tanh(x)
    if kind == RELU:
        return x if x > zero else zero
    if kind == HARD_SIGMOID:
        return min(max(alpha * x + beta, zero), one)
    if kind == LEAKY_RELU:
        return x if x >= zero else alpha * x
    if kind == THRESHOLDED_RELU:
        return x if x > alpha else zero
    if kind == SCALED_TANH:
        return alpha * tanh(beta * x)
    if kind == AFFINE:
        return alpha * x + beta
    if kind == ELU:
        return x if x >= zero else alpha * math.expm1(x)
    if kind == SOFTSIGN:
        return x / (one + abs(x))
    # SOFTPLUS, log(1 + eˣ) without overflow
    return max(x, zero) + math.log1p(math.exp(-abs(x)))


@njit(**EQUATION_OPTIONS)
def clip(z, bound):
    """z clamped to [-bound, bound] (ONNX's ``clip`` on gate pre-activations; bound = ∞: none)."""
    return min(max(z, -bound), bound)


@njit(**EQUATION_OPTIONS)
def lstm_gates_onnx(
    z_i, z_f, z_g, z_o, c_prev, p_i, p_o, p_f, bound, input_forget,
    f_kind, f_alpha, f_beta, g_kind, g_alpha, g_beta, h_kind, h_alpha, h_beta,
):  # fmt: skip
    """``lstm_gates`` with ONNX's options, in ONNX's names for the activations (f for the gates,
    g for the candidate, h for the output):

    i = f(clip(z_i + P_i ⊙ C_prev)), f = 1 − i if ``input_forget`` else f(clip(z_f + P_f ⊙ C_prev)),
    C̃ = g(clip(z_g)), C = f ⊙ C_prev + i ⊙ C̃, o = f(clip(z_o + P_o ⊙ C)), h = o ⊙ h(C).
    Peepholes p_* are 0 when unused. Returns ``(f, i, C̃, o, C, h)``.
    """
    i = activation(f_kind, clip(z_i + p_i * c_prev, bound), f_alpha, f_beta)
    if input_forget:
        f = type(i)(1.0) - i
    else:
        f = activation(f_kind, clip(z_f + p_f * c_prev, bound), f_alpha, f_beta)
    c_tilde = activation(g_kind, clip(z_g, bound), g_alpha, g_beta)
    c = cell_update(f, c_prev, i, c_tilde)
    o = activation(f_kind, clip(z_o + p_o * c, bound), f_alpha, f_beta)
    return f, i, c_tilde, o, c, o * activation(h_kind, c, h_alpha, h_beta)


@njit(**EQUATION_OPTIONS)
def lstm_cell_onnx(
    z_i, z_f, z_g, z_o, c_prev, p_i, p_o, p_f, bound, input_forget,
    f_kind, f_alpha, f_beta, g_kind, g_alpha, g_beta, h_kind, h_alpha, h_beta,
):  # fmt: skip
    """``lstm_gates_onnx``, keeping what the next step needs: ``(h, C)``."""
    _, _, _, _, c, h = lstm_gates_onnx(
        z_i, z_f, z_g, z_o, c_prev, p_i, p_o, p_f, bound, input_forget,
        f_kind, f_alpha, f_beta, g_kind, g_alpha, g_beta, h_kind, h_alpha, h_beta,
    )  # fmt: skip
    return h, c
