"""Figures of what each gate does, from ``model(x, return_gates=True)``'s traces.

Needs matplotlib (``pip install "lstm-numba[plot]"``), imported only with this module. The
functions build ``matplotlib.figure.Figure`` objects without pyplot, so they work headless and
leave pyplot's state alone: save with ``figure.savefig("gates.png")``, or show one in a notebook
by leaving it as the cell's value.
"""

import numpy as np

from lstm_numba._validation import import_optional
from lstm_numba.model import Gates

Figure = import_optional("matplotlib.figure", "plot").Figure

GATE_PANELS = (
    ("forget", "forget gate f = σ(W_f·[h, x] + b_f)", "viridis", (0.0, 1.0)),
    ("input", "input gate i = σ(W_i·[h, x] + b_i)", "viridis", (0.0, 1.0)),
    ("candidate", "candidate memory C̃ = tanh(W_c·[h, x] + b_c)", "RdBu_r", (-1.0, 1.0)),
    ("output", "output gate o = σ(W_o·[h, x] + b_o)", "viridis", (0.0, 1.0)),
    ("cell", "cell state C = f ⊙ C_prev + i ⊙ C̃", "RdBu_r", None),
)
"""Each panel of ``gates``: trace, title, colour map, colour range (None: symmetric, fitted)."""


def _check_index(name, value, size, meaning):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an integer {meaning} index, got {value!r}")
    if not 0 <= value < size:
        raise ValueError(f"{name}: expected 0 <= {name} < {size} ({meaning}), got {value}")
    return int(value)


def _selected_units(units, hidden):
    """Indices of ``units`` (a slice or integer indices) among H hidden units."""
    selected = np.arange(hidden)[units] if isinstance(units, slice) else np.asarray(units)
    selected = np.atleast_1d(selected)
    if selected.dtype.kind not in "iu" and selected.size:
        raise ValueError(f"units: expected a slice or integer unit indices, got {units!r}")
    if selected.size == 0:
        raise ValueError(f"units: {units!r} selects none of the H = {hidden} hidden units")
    outside = selected[(selected < 0) | (selected >= hidden)]
    if outside.size:
        raise ValueError(f"units: expected indices in [0, {hidden}) (hidden units), got {outside}")
    return selected


def _check_gates(gates):
    """``gates`` if it is the ``Gates`` of a forward, else a ``TypeError`` naming it."""
    if not isinstance(gates, Gates):
        raise TypeError(
            f"gates: expected the Gates of model(x, return_gates=True), got {type(gates).__name__}"
        )
    return gates


def _trace(gates, name, index, batch):
    """One (T, H) trace of ``gates`` (batch row 0 of an unbatched call's), the checks done, as
    float64."""
    values = np.asarray(getattr(gates, name))
    if values.ndim == 3:  # (L·D, T, H): one unbatched sequence
        values = values[:, None]
    if values.ndim != 4:
        raise ValueError(
            f"gates: expected traces (L·D, B, T, H), or (L·D, T, H) of one unbatched sequence, "
            f"got {name} shape {values.shape}"
        )
    _check_index("index", index, values.shape[0], "layer·direction")
    _check_index("batch", batch, values.shape[1], "batch row")
    return values[index, batch].astype(np.float64)


def gates(gates, batch=0, units=slice(0, 32), index=0, panels=None):
    """Heatmaps over time of the forget, input, candidate and output gates and the cell state of
    one batch row, one panel each (``panels``: some of these names, in this order, all by
    default), for hidden ``units`` (a slice or indices; the first 32 by default) of entry
    ``index`` of the traces' leading axis (layer k, direction d at k·D + d). Steps past the
    sequence's length (NaN) stay blank. Returns a ``Figure``."""
    hidden = np.asarray(_check_gates(gates).cell).shape[-1]
    selected = _selected_units(units, hidden)
    names = [panel[0] for panel in GATE_PANELS]
    chosen = names if panels is None else list(panels)
    if not chosen or any(name not in names for name in chosen):
        raise ValueError(f"panels: expected some of {names}, got {panels!r}")
    shown = [panel for panel in GATE_PANELS if panel[0] in chosen]
    figure = Figure(figsize=(9, 1.2 + 2.1 * len(shown)), layout="constrained")
    axes = np.atleast_1d(figure.subplots(len(shown), 1, sharex=True))
    for ax, (name, title, colours, limits) in zip(axes, shown, strict=True):
        values = _trace(gates, name, index, batch)[:, selected].T  # (units, T)
        if limits is None:
            bound = max(float(np.nanmax(np.abs(values), initial=0.0)), 1e-12)
            limits = (-bound, bound)
        image = ax.imshow(
            values, aspect="auto", interpolation="nearest", cmap=colours, vmin=limits[0],
            vmax=limits[1], extent=(-0.5, values.shape[1] - 0.5, len(selected) - 0.5, -0.5),
        )  # fmt: skip
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("hidden unit")
        ticks = np.linspace(0, len(selected) - 1, min(len(selected), 8)).round().astype(int)
        ax.set_yticks(ticks, [str(selected[t]) for t in ticks])
        figure.colorbar(image, ax=ax, label=name)
    axes[-1].set_xlabel("time step t")
    figure.suptitle(f"LSTM gates, batch row {batch}, traces[{index}]")
    return figure


def cell_update(gates, batch=0, unit=0, index=0):
    """The cell update of one hidden unit over time: what the forget gate keeps of the old memory
    (f ⊙ C_prev = C − i ⊙ C̃), what the input gate lets in of the candidate (i ⊙ C̃), and their
    sum, the new cell state C; the gates themselves below. Returns a ``Figure``."""
    hidden = np.asarray(_check_gates(gates).cell).shape[-1]
    unit = _check_index("unit", unit, hidden, "hidden unit")
    forget, input_, candidate, output, cell = (
        _trace(gates, name, index, batch)[:, unit]
        for name in ("forget", "input", "candidate", "output", "cell")
    )
    admitted = input_ * candidate
    kept = cell - admitted
    steps = np.arange(cell.size)
    figure = Figure(figsize=(8, 5.5), layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    top.plot(steps, kept, marker=".", label="f ⊙ C_prev (old memory kept)")
    top.plot(steps, admitted, marker=".", label="i ⊙ C̃ (new memory admitted)")
    top.plot(steps, cell, color="black", linewidth=2, label="C = f ⊙ C_prev + i ⊙ C̃")
    top.axhline(0.0, color="grey", linewidth=0.5)
    top.set_ylabel("cell state contribution")
    top.set_title(f"cell update of unit {unit}, batch row {batch}, traces[{index}]")
    top.legend(loc="best", fontsize=8)
    for values, label in ((forget, "f"), (input_, "i"), (output, "o"), (candidate, "C̃")):
        bottom.plot(steps, values, marker=".", label=label)
    bottom.set_ylabel("gate value")
    bottom.set_xlabel("time step t")
    bottom.set_title("the gates: forget f, input i, output o, candidate C̃", fontsize=10)
    bottom.legend(loc="best", fontsize=8, ncols=4)
    return figure
