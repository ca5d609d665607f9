"""``python -m lstm_numba`` (its options checked in process, its runs each in a fresh process) and
the on-disk kernel cache."""

import importlib.util
import re
import time
import warnings

import pytest
from conftest import run_python

import lstm_numba as ln
from lstm_numba.__main__ import PEER_IDLE_SECONDS, PEER_ROUNDS, main


def test_main_job_checks_and_times():
    out = run_python(
        "-m", "lstm_numba", "--batch", "3", "--steps", "4", "--input-size", "5",
        "--hidden-size", "6", "--repeats", "2",
    ).stdout  # fmt: skip
    assert "check against the float64 reference" in out and "OK" in out
    assert "first call (compile or cache load)" in out
    assert "sequences/s" in out


def test_main_job_runs_a_frozen_model(capsys):
    """``--freeze``: the model frozen (``LSTM.freeze``), said in the model's line, checked."""
    assert main(["--batch", "3", "--steps", "2", "--input-size", "4", "--hidden-size", "64",
                 "--repeats", "2", "--freeze"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "dtype=float32), frozen; x: (B, T, I) = (3, 2, 4)" in out and "OK" in out


def test_main_job_with_layers_and_directions():
    out = run_python(
        "-m", "lstm_numba", "--batch", "2", "--steps", "3", "--input-size", "4",
        "--hidden-size", "5", "--num-layers", "2", "--bidirectional", "--repeats", "1",
    ).stdout  # fmt: skip
    assert "num_layers=2" in out and "bidirectional=True" in out and "OK" in out


@pytest.mark.parametrize("suffix", [".npz", ".onnx"])
def test_main_job_checks_and_times_a_model_file(tmp_path, capsys, suffix):
    """``--model``: a saved or ONNX model with options the default lacks (time-major, peepholes,
    clip, two layers of two directions), checked against the reference with all of them."""
    model = ln.LSTM(
        3, 4, num_layers=2, bidirectional=True, batch_first=False, peepholes=True, clip=2.0,
        seed=3,
    )  # fmt: skip
    path = tmp_path / f"m{suffix}"
    if suffix == ".onnx":
        onnx = pytest.importorskip("onnx")
        onnx.save(ln.to_onnx(model), path)
    else:
        model.save(path)
    assert main(["--model", str(path), "--batch", "2", "--steps", "5", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "peepholes=True, clip=2.0" in out and "x: (T, B, I) = (5, 2, 3)" in out
    assert "OK" in out


@pytest.mark.parametrize("peer, name", [("torch", "torch"), ("onnxruntime", "onnxruntime")])
def test_main_job_times_a_peer_beside_it(capsys, peer, name, monkeypatch):
    """``--torch``, ``--onnxruntime``: the library on the same batch, checked to give the same y,
    timed in turn with lstm_numba, each block of calls after a pause in which the library before
    lets its idle threads sleep (``PEER_IDLE_SECONDS``)."""
    pytest.importorskip(peer)
    if peer == "onnxruntime":
        pytest.importorskip("onnx")
    pauses = []
    monkeypatch.setattr(time, "sleep", pauses.append)
    argv = [f"--{peer}", "--batch", "2", "--steps", "3", "--input-size", "4", "--hidden-size",
            "5", "--num-layers", "2", "--bidirectional", "--repeats", "2"]  # fmt: skip
    assert main(argv) == 0
    assert pauses == [PEER_IDLE_SECONDS] * 2 * PEER_ROUNDS  # two libraries' blocks
    out = capsys.readouterr().out
    assert re.search(rf"{name} \S+.*: same y", out)
    assert re.search(rf"{name} \S+.*: best .* ms; lstm_numba \d+\.\d\d× its speed", out)


@pytest.mark.parametrize(
    "graph", ["torch", "time-major", "sequence_lens", "first output not y", "no lengths"]
)
def test_onnxruntime_runs_the_onnx_file_given(tmp_path, capsys, graph):
    """``--model m.onnx --onnxruntime``: ONNX Runtime runs the file itself (checked to give y):
    torch's export of a batch-first stack with h0, c0 as inputs (fed zeros), ``to_onnx``'s
    time-major nodes (Y [T, D, B, H] read as y), with sequence_lens fed ``--lengths``; a graph
    whose first output is not y, or that takes no lengths where ``--lengths`` gives some, is
    named, and the LSTM's nodes re-exported run instead."""
    pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    path = str(tmp_path / "m.onnx")
    if graph == "torch":
        torch = pytest.importorskip("torch")
        module = torch.nn.LSTM(4, 5, num_layers=2, bidirectional=True, batch_first=True).eval()
        states = (torch.zeros(4, 3, 5), torch.zeros(4, 3, 5))  # the run's B = 3, T = 6
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on exporting RNNs
            torch.onnx.export(module, (torch.zeros(3, 6, 4), states), path, dynamo=False,
                              input_names=["x", "h0", "c0"])  # fmt: skip
    else:
        model = ln.LSTM(4, 5, bidirectional=True, batch_first=False, seed=1)
        exported = ln.to_onnx(model, sequence_lens=graph == "sequence_lens")
        if graph == "first output not y":
            exported.graph.output.insert(0, exported.graph.output.pop(1))
        onnx.save(exported, path)
    argv = ["--model", path, "--onnxruntime", "--batch", "3", "--steps", "6", "--repeats", "2"]
    assert main(argv + ["--lengths"] * (graph in ("sequence_lens", "no lengths"))) == 0
    out = capsys.readouterr().out
    if graph in ("first output not y", "no lengths"):
        why = "its first output, 'Y_h'" if graph != "no lengths" else "it takes no sequence lengths"
        assert "runs the LSTM nodes of" in out and why in out, out
        assert re.search(r"onnxruntime \S+: same y", out), out
    else:
        assert re.search(r"onnxruntime \S+ \(m\.onnx\): same y", out), out


def test_main_job_with_lengths(capsys):
    """``--lengths``: sequences of random lengths, checked against the reference and run by each
    peer installed with them (torch on a PackedSequence, ONNX Runtime with sequence_lens), whose
    y must be lstm_numba's, zeros past each length."""
    needs = {"--torch": ["torch"], "--onnxruntime": ["onnxruntime", "onnx"]}
    peers = [peer for peer, modules in needs.items() if all(map(importlib.util.find_spec, modules))]
    argv = ["--lengths", *peers, "--batch", "5", "--steps", "8", "--input-size", "4",
            "--hidden-size", "5", "--num-layers", "2", "--bidirectional",
            "--repeats", "2"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert re.search(r"lengths: [4-8] to [4-8] steps, \d+ in all", out), out
    assert "OK" in out and out.count(": same y") == len(peers), out


def test_main_job_runs_each_library_on_the_threads_given():
    """``--threads 1``: lstm_numba (``set_num_threads``) and the peers installed each on one
    thread, said on their lines; in a fresh process, as the limit holds for the process."""
    peers = []
    if importlib.util.find_spec("torch"):
        peers.append("--torch")
    if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnx"):
        peers.append("--onnxruntime")
    out = run_python(
        "-m", "lstm_numba", "--threads", "1", *peers, "--batch", "2", "--steps", "3",
        "--input-size", "4", "--hidden-size", "5", "--repeats", "2",
    ).stdout  # fmt: skip
    assert "device: cpu (1 thread)" in out and "OK" in out
    if "--torch" in peers:
        assert re.search(r"torch \S+ \(1 thread\): same y", out), out
    if "--onnxruntime" in peers:
        assert re.search(r"onnxruntime \S+ \(1 thread\): same y", out), out


def test_main_job_refuses_what_it_cannot_run(tmp_path, capsys):
    """Sizes beside ``--model``, a file that is no model, a peer on the GPU or one that cannot
    run the model, and (on any machine without a GPU) ``--device cuda``: a usage error, exit
    status 2."""
    (tmp_path / "m.onnx").write_bytes(b"garbage")
    calls = {
        "--hidden-size, --dtype: given by the file": ["--model", "m.npz", "--hidden-size", "4",
                                                      "--dtype", "float64"],
        "m.onnx is not an ONNX model": ["--model", str(tmp_path / "m.onnx")],
        "No such file": ["--model", str(tmp_path / "absent.npz")],
        "--torch: with --device cpu only": ["--torch", "--device", "cuda"],
        "--threads: threads: expected 1 to NUMBA_NUM_THREADS": ["--threads", "100000"],
        "--onnxruntime: ONNX Runtime's LSTM runs float32 only": [
            "--onnxruntime", "--dtype", "float64", "--batch", "1", "--steps", "2",
        ],
    }  # fmt: skip
    if ln.available_devices()["cuda"].startswith("unavailable"):
        calls["device='cuda': no usable CUDA GPU"] = ["--device", "cuda", "--batch", "1"]
    for message, argv in calls.items():
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


def test_main_job_runs_without_docstrings():
    """``python -OO`` strips docstrings, which the command line's help is built from."""
    out = run_python("-OO", "-m", "lstm_numba", "--help").stdout
    assert "--hidden-size" in out


@pytest.mark.parametrize("option, value", [("--batch", "0"), ("--steps", "-1"), ("--repeats", "x")])
def test_main_job_refuses_sizes_below_one(capsys, option, value):
    with pytest.raises(SystemExit) as exit_info:
        main([option, value])
    assert exit_info.value.code == 2
    assert (
        f"argument {option}: expected a positive integer, got '{value}'" in capsys.readouterr().err
    )


CALL_AND_REPORT_CACHE = """
import numpy as np, lstm_numba as ln
from lstm_numba import cpu
ln.LSTM(3, 4, dtype=np.float64)(np.zeros((2, 5, 3)))
print(sum(cpu.lstm_rows_forward.stats.cache_hits.values()))
"""


def test_second_process_loads_kernels_from_cache():
    run_python("-c", CALL_AND_REPORT_CACHE)  # compiles and saves, unless a cache exists
    assert int(run_python("-c", CALL_AND_REPORT_CACHE).stdout.strip().splitlines()[-1]) >= 1


def test_import_leaves_the_reference_and_scipy_special_unloaded():
    """``lstm_numba.reference`` loads ``scipy.special`` (≈ 0.3 s), which no forward needs: it is
    imported on first use, and works then."""
    out = run_python(
        "-c",
        "import sys, lstm_numba; print('scipy.special' in sys.modules); "
        "print(lstm_numba.reference.lstm_forward.__name__)",
    ).stdout
    assert out.split() == ["False", "lstm_forward"]
