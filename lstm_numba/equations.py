"""The seed's equations on scalars: the single source of truth for every compile target.

Each function is an ``@njit`` function inlined into the kernels that call it. CUDA kernels call
the same functions: Numba compiles a CPU-jitted function called from a ``@cuda.jit`` kernel as a
device function (``cuda.jit(device=True)``), so the math below is written once. Keep it to plain
arithmetic and comparisons that every target compiles.

The transcendental functions are evaluated in float64 whatever the storage dtype (a float32 input
is promoted by the float64 constants), which costs nothing measurable here and keeps float32 results
within one rounding of the exact value.
"""

from numba import njit

from lstm_numba._config import EQUATION_OPTIONS

TANH_SATURATION = 20.0
"""Beyond ±20, tanh(x) is ±1 to float64 precision (1 - tanh(20) ≈ 8.5e-18)."""


@njit(**EQUATION_OPTIONS)
def tanh(x):
    """tanh(x) to ≈1e-15 relative accuracy, as branch-free arithmetic that vectorizes.

    Numba 0.68 has no SVML, so ``math.tanh`` stays a scalar libm call (40–50 ns an element).
    Here the clamped argument is scaled by 2⁻⁵, sinh and cosh of the small argument come from their
    Taylor series (truncation error < 1e-16 for |y| ≤ 0.625), and five doublings
    sinh 2y = 2 sinh y cosh y, cosh 2y = sinh²y + cosh²y bring them back; one division at the end.
    Each doubling adds one rounding and does not amplify earlier ones, and cosh stays ≤ cosh 20,
    so nothing overflows. NaN passes through the clamp.
    """
    if x > TANH_SATURATION:
        x = TANH_SATURATION
    elif x < -TANH_SATURATION:
        x = -TANH_SATURATION
    y = x * (1.0 / 32.0)
    y2 = y * y
    s = y * (
        1.0
        + y2
        * (
            1.0 / 6
            + y2
            * (
                1.0 / 120
                + y2
                * (
                    1.0 / 5040
                    + y2 * (1.0 / 362880 + y2 * (1.0 / 39916800 + y2 * (1.0 / 6227020800)))
                )
            )
        )
    )
    c = 1.0 + y2 * (
        1.0 / 2
        + y2
        * (
            1.0 / 24
            + y2
            * (
                1.0 / 720
                + y2
                * (
                    1.0 / 40320
                    + y2 * (1.0 / 3628800 + y2 * (1.0 / 479001600 + y2 * (1.0 / 87178291200)))
                )
            )
        )
    )
    s, c = 2.0 * s * c, s * s + c * c
    s, c = 2.0 * s * c, s * s + c * c
    s, c = 2.0 * s * c, s * s + c * c
    s, c = 2.0 * s * c, s * s + c * c
    s, c = 2.0 * s * c, s * s + c * c
    return s / c


@njit(**EQUATION_OPTIONS)
def sigmoid(x):
    """σ(x) = 1 / (1 + e⁻ˣ), computed as ½·tanh(x/2) + ½ (absolute error ≈1e-16)."""
    return 0.5 * tanh(0.5 * x) + 0.5


@njit(**EQUATION_OPTIONS)
def cell_update(f, c_prev, i, c_tilde):
    """C = f ⊙ C_prev + i ⊙ C̃: the forget gate filters the old memory, the input gate the new."""
    return f * c_prev + i * c_tilde


@njit(**EQUATION_OPTIONS)
def hidden_state(o, c):
    """h = o ⊙ tanh(C): the output gate filters the squashed cell state."""
    return o * tanh(c)


@njit(**EQUATION_OPTIONS)
def lstm_cell(z_i, z_f, z_g, z_o, c_prev):
    """One hidden unit of one step from its four gate pre-activations ``W·[h, x] + b``.

    f = σ(z_f), i = σ(z_i), C̃ = tanh(z_g), C = f ⊙ C_prev + i ⊙ C̃, o = σ(z_o), h = o ⊙ tanh(C).
    Returns ``(h, C)``.
    """
    c = cell_update(sigmoid(z_f), c_prev, sigmoid(z_i), tanh(z_g))
    return hidden_state(sigmoid(z_o), c), c
