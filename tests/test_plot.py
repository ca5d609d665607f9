"""``lstm_numba.plot`` headless: files written, figures labelled, bad arguments clear."""

import importlib
import sys

import numpy as np
import pytest

import lstm_numba as ln

matplotlib = pytest.importorskip("matplotlib")
from lstm_numba import plot  # noqa: E402  (needs matplotlib)


@pytest.fixture(scope="module")
def gates():
    model = ln.LSTM(3, 8, num_layers=2, bidirectional=True, seed=0)
    x = np.random.default_rng(0).standard_normal((2, 12, 3)).astype(np.float32)
    return model(x, lengths=[12, 7], return_gates=True)[2]


def test_gates_figure(gates, tmp_path):
    figure = plot.gates(gates, batch=1, units=[0, 3, 5], index=3)
    panels = [ax for ax in figure.axes if ax.get_title()]
    assert [ax.get_title().split()[0] for ax in panels] == [
        "forget", "input", "candidate", "output", "cell",
    ]  # fmt: skip
    assert all(ax.get_ylabel() == "hidden unit" for ax in panels)
    assert panels[-1].get_xlabel() == "time step t"
    assert len(figure.axes) == 10  # five panels, five colour bars
    assert figure.get_suptitle() == "LSTM gates, batch row 1, traces[3]"
    figure.savefig(tmp_path / "gates.png")
    assert (tmp_path / "gates.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cell_update_figure(gates, tmp_path):
    figure = plot.cell_update(gates, batch=0, unit=5, index=1)
    top, bottom = figure.axes
    kept, admitted, cell = (line.get_ydata() for line in top.get_lines()[:3])
    np.testing.assert_allclose(kept + admitted, cell, rtol=1e-6)  # f·C_prev + i·C̃ = C
    np.testing.assert_allclose(cell, gates.cell[1, 0, :, 5])
    assert top.get_ylabel() and bottom.get_xlabel() == "time step t" and top.get_legend()
    figure.savefig(tmp_path / "cell.png")
    assert (tmp_path / "cell.png").stat().st_size > 1000


def test_pyplot_is_left_alone(gates):
    """``plot.gates`` draws on a ``Figure`` of its own: it opens no pyplot figure (whatever
    figures earlier tests in this process left open)."""
    import sys

    def open_figures():
        pyplot = sys.modules.get("matplotlib.pyplot")
        return [] if pyplot is None else pyplot.get_fignums()

    figures = open_figures()
    plot.gates(gates)
    assert open_figures() == figures


@pytest.mark.parametrize(
    "call, error, pattern",
    [
        (lambda g: plot.gates(g, batch=2), ValueError, r"batch: expected 0 <= batch < 2"),
        (lambda g: plot.gates(g, index=4), ValueError, r"index: expected 0 <= index < 4"),
        (lambda g: plot.gates(g, units=[1, 8]), ValueError, r"units: expected indices in \[0, 8\)"),
        (lambda g: plot.gates(g, units=[]), ValueError, r"units: \[\] selects none of the H = 8"),
        (lambda g: plot.gates(g, units=slice(8, 16)), ValueError, r"units: slice\(8, 16, None\) "),
        (lambda g: plot.gates(g, units=[0.5]), ValueError, r"units: expected a slice or integer"),
        (lambda g: plot.gates(tuple(g)), TypeError, r"gates: expected the Gates of model\(x, "),
        (lambda g: plot.gates(g, panels=["gate"]), ValueError, r"panels: expected some of"),
        (lambda g: plot.cell_update(g, unit=8), ValueError, r"unit: expected 0 <= unit < 8"),
        (lambda g: plot.cell_update(g, unit=1.5), TypeError, r"unit: expected an integer"),
        (lambda g: plot.cell_update(g, batch=-1), ValueError, r"batch: expected 0 <= batch < 2"),
    ],
)
def test_bad_arguments(gates, call, error, pattern):
    with pytest.raises(error, match=pattern):
        call(gates)


def test_chosen_panels(gates):
    figure = plot.gates(gates, panels=["forget", "cell"])
    titles = [ax.get_title().split()[0] for ax in figure.axes if ax.get_title()]
    assert titles == ["forget", "cell"]


def test_traces_of_one_unbatched_sequence():
    """An unbatched call's traces (L·D, T, H) plot as batch row 0."""
    model = ln.LSTM(3, 8, seed=0)
    x = np.random.default_rng(1).standard_normal((6, 3)).astype(np.float32)
    traces = model(x, return_gates=True)[2]
    figure = plot.cell_update(traces, unit=2)
    np.testing.assert_allclose(figure.axes[0].get_lines()[2].get_ydata(), traces.cell[0, :, 2])
    assert plot.gates(traces).get_suptitle() == "LSTM gates, batch row 0, traces[0]"
    with pytest.raises(ValueError, match=r"batch: expected 0 <= batch < 1"):
        plot.gates(traces, batch=1)


def test_without_matplotlib_the_import_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.delitem(sys.modules, "lstm_numba.plot")
    with pytest.raises(ImportError, match=r"matplotlib is not installed; .*lstm-numba\[plot\]"):
        importlib.import_module("lstm_numba.plot")
