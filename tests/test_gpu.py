"""The GPU kernels against the CPU path and the reference.

These tests run where CUDA kernels can run: on a real GPU (with numba-cuda), or under Numba's CUDA
simulator. A plain ``pytest`` run on a machine without a GPU runs this file again in a subprocess
with ``NUMBA_ENABLE_CUDASIM=1`` (``test_gpu_kernels_under_the_simulator``).

Under the simulator the tile sizes and threads per block are patched small, so that the GEMM runs
several blocks and k-slices and the sequence kernel's threads loop over their (unit, row) pairs.
The simulator runs blocks one after another and its grid barrier synchronises one block only, so
the sequence kernel runs as one block there; several blocks are tested on one-step sequences,
which need no barrier. Not exercised by the simulator: the grid barrier across blocks and the
cooperative-launch sizing (``gpu._resident_blocks``); they run on a real GPU.
"""

import importlib.util
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from conftest import assert_close

import lstm_numba as ln
from lstm_numba import dispatch

NUMBA_CUDA = importlib.util.find_spec("numba_cuda") is not None
"""numba-cuda installed (the [cuda] and [test] extras); Numba's own numba.cuda is not tested."""
SIMULATED = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
REAL_GPU = not SIMULATED and dispatch.cuda_status()[0]
runs_kernels = pytest.mark.skipif(
    not (SIMULATED or REAL_GPU), reason="no GPU: run in a subprocess under the CUDA simulator"
)


@pytest.mark.skipif(SIMULATED or REAL_GPU, reason="the kernels run in this process")
def test_gpu_kernels_under_the_simulator():
    if not NUMBA_CUDA:
        pytest.skip("numba-cuda is not installed (pip install -e '.[test]')")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", __file__],
        env={**os.environ, "NUMBA_ENABLE_CUDASIM": "1"},
        cwd=pathlib.Path(__file__).parent.parent,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert " passed" in result.stdout, result.stdout


@pytest.fixture
def gpu(monkeypatch):
    """``lstm_numba.gpu``, with small launch shapes under the simulator, and the dispatch layer
    told that the simulator may run the GPU path (it never picks it on its own)."""
    from lstm_numba import gpu

    if SIMULATED:
        monkeypatch.setattr(dispatch, "cuda_status", lambda: (True, "CUDA simulator (tests)"))
        for name, value in [
            ("SEQUENCE_THREADS", 8),
            ("SEQUENCE_LANES", 4),
            ("SEQUENCE_MIN_LANES", 2),
        ]:
            monkeypatch.setattr(gpu, name, value)
        set_gemm_geometry(monkeypatch, gpu, threads=4, row_work=2, column_work=4)
    return gpu


def set_gemm_geometry(monkeypatch, gpu, threads, row_work, column_work):
    """GEMM blocks of threads² threads, each computing row_work × column_work outputs (the
    simulator reads these constants as it runs)."""
    rows, columns = threads * row_work, threads * column_work
    for name, value in [
        ("GEMM_THREADS", threads),
        ("GEMM_ROW_WORK", row_work),
        ("GEMM_COLUMN_WORK", column_work),
        ("GEMM_ROWS", rows),
        ("GEMM_COLUMNS", columns),
        ("GEMM_ROWS_PADDED", rows + 1),
        ("GEMM_COLUMNS_PADDED", columns + 1),
    ]:
        monkeypatch.setattr(gpu, name, value)


@runs_kernels
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1, 1), (7, 5, 9), (19, 13, 30)])  # (M, K, N)
def test_input_projection_is_a_gemm(gpu, rng, dtype, shape):
    from numba import cuda

    rows, inner, columns = shape
    a = rng.standard_normal((rows, inner)).astype(dtype)
    w = rng.standard_normal((columns, inner)).astype(dtype)
    bias = rng.standard_normal(columns).astype(dtype)
    out = cuda.device_array((rows, columns), dtype)
    blocks = (-(-columns // gpu.GEMM_COLUMNS), -(-rows // gpu.GEMM_ROWS))
    gpu.input_projection[blocks, (gpu.GEMM_THREADS, gpu.GEMM_THREADS)](
        cuda.to_device(a), cuda.to_device(w), cuda.to_device(bias), out
    )
    expected = a.astype(np.float64) @ w.T.astype(np.float64) + bias
    assert_close(out.copy_to_host(), expected)


CONFIGURATIONS = [
    {},
    {"num_layers": 2, "bidirectional": True},
    {"bidirectional": True, "proj_size": 2, "batch_first": False},
    {"num_layers": 2, "proj_size": 3, "bias": False},
    {"peepholes": True, "clip": 0.5, "input_forget": True},
    {"bidirectional": True, "activations": ("hard_sigmoid", "relu", "tanh")},
    {"reverse": True, "num_layers": 2},
]


def random_call(rng, model, batch=3, steps=4):
    shape = (batch, steps) if model.batch_first else (steps, batch)
    x = rng.standard_normal((*shape, model.input_size)).astype(model.dtype)
    k = model.num_layers * model.num_directions
    h0 = rng.standard_normal((k, batch, model.output_size)).astype(model.dtype)
    c0 = rng.standard_normal((k, batch, model.hidden_size)).astype(model.dtype)
    return x, (h0, c0)


def assert_same_as_cpu(model, x, hx=None, lengths=None):
    """The GPU forward (NumPy in, NumPy out) equals the CPU forward to the dtype's tolerance."""
    y, (h_n, c_n) = model(x, hx, lengths, device="cuda")
    assert isinstance(y, np.ndarray) and y.dtype == model.dtype
    y_cpu, (h_cpu, c_cpu) = model(x, hx, lengths)
    assert_close(y, y_cpu)
    assert_close(h_n, h_cpu)
    assert_close(c_n, c_cpu)


@runs_kernels
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_forward_matches_cpu(gpu, rng, dtype, options):
    model = ln.LSTM(3, 5, **options, dtype=dtype, seed=1)
    x, hx = random_call(rng, model)
    assert_same_as_cpu(model, x, hx, lengths=np.array([4, 0, 2]))


@runs_kernels
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("options", CONFIGURATIONS)
def test_tiled_forward_matches_cpu(gpu, rng, monkeypatch, dtype, options):
    """``lstm_sequence_tiled`` at any batch size: under the simulator 10 rows make two row tiles
    (8 rows each) and H = 5 two unit tiles (4 units each), one block looping over the four."""
    monkeypatch.setattr(gpu, "takes_tiled", lambda batch, hidden: True)
    model = ln.LSTM(3, 5, **options, dtype=dtype, seed=13)
    x, hx = random_call(rng, model, batch=10, steps=4)
    assert_same_as_cpu(model, x, hx, lengths=np.array([4, 0, 2, 4, 1, 3, 4, 4, 2, 1]))


@runs_kernels
@pytest.mark.parametrize("threads, row_work, column_work", [(2, 3, 8), (4, 1, 4)])
def test_tiled_geometries(gpu, rng, monkeypatch, threads, row_work, column_work):
    """Other register tiles: 8 columns a thread hold two units' four gates each; one row a
    thread."""
    if not SIMULATED:
        pytest.skip("the tile's geometry is compiled in: the simulator reads it as it runs")
    set_gemm_geometry(monkeypatch, gpu, threads, row_work, column_work)
    monkeypatch.setattr(gpu, "takes_tiled", lambda batch, hidden: True)
    model = ln.LSTM(6, 9, proj_size=4, dtype=np.float64, seed=14)
    x, hx = random_call(rng, model, batch=7, steps=3)
    assert_same_as_cpu(model, x, hx, lengths=np.array([3, 1, 0, 3, 2, 3, 3]))


@runs_kernels
def test_forward_matches_reference_without_lengths(gpu, rng):
    from lstm_numba import reference

    model = ln.LSTM(4, 6, num_layers=2, bidirectional=True, dtype=np.float64, seed=2)
    x, hx = random_call(rng, model, batch=2, steps=5)
    y, (h_n, c_n) = model(x, hx, device="cuda")
    y_ref, (h_ref, c_ref) = reference.lstm_forward(x, model.state_dict(), hx)
    assert_close(y, y_ref)
    assert_close(h_n, h_ref)
    assert_close(c_n, c_ref)


@runs_kernels
@pytest.mark.parametrize("options", [{"bidirectional": True}, {"peepholes": True, "proj_size": 2}])
@pytest.mark.parametrize("tiled", [True, False])  # lstm_sequence_tiled, lstm_sequence
def test_gate_traces_match_cpu(gpu, rng, monkeypatch, options, tiled):
    monkeypatch.setattr(gpu, "takes_tiled", lambda batch, hidden: tiled)
    model = ln.LSTM(3, 4, **options, seed=10)
    x, hx = random_call(rng, model)
    lengths = np.array([4, 0, 2])
    _, _, gates = model(x, hx, lengths, device="cuda", return_gates=True)
    _, _, expected = model(x, hx, lengths, return_gates=True)
    for name in ln.Gates._fields:
        trace, reference = getattr(gates, name), getattr(expected, name)
        assert isinstance(trace, np.ndarray) and trace.shape == reference.shape
        np.testing.assert_array_equal(np.isnan(trace), np.isnan(reference))
        assert_close(np.nan_to_num(trace), np.nan_to_num(reference))


@runs_kernels
def test_weights_from_global_memory(gpu, rng, monkeypatch):
    """The fallback when a block's W_hh slice does not fit in shared memory."""
    monkeypatch.setattr(gpu, "SHARED_BYTES", 0)
    model = ln.LSTM(3, 5, bidirectional=True, proj_size=2, seed=3)
    x, hx = random_call(rng, model)
    assert_same_as_cpu(model, x, hx, lengths=np.array([1, 4, 3]))


@runs_kernels
@pytest.mark.parametrize("in_shared", [True, False])
def test_each_lane_sums_several_terms(gpu, rng, monkeypatch, in_shared):
    """H_out = 20 over 2 lanes (the simulator's plan for 40 pairs on 8 threads): each thread sums
    ten terms of each gate's dot product."""
    if not in_shared:
        monkeypatch.setattr(gpu, "SHARED_BYTES", 0)
    model = ln.LSTM(3, 20, seed=12)
    x, hx = random_call(rng, model, batch=2, steps=3)
    assert_same_as_cpu(model, x, hx, lengths=np.array([3, 2]))


@runs_kernels
@pytest.mark.parametrize("unit_blocks, slices", [(2, 1), (3, 2), (7, 1), (1, 3)])
@pytest.mark.parametrize("lanes", [1, 4])
@pytest.mark.parametrize("in_shared", [True, False])
def test_blocks_split_the_units_and_rows(
    gpu, rng, monkeypatch, unit_blocks, slices, lanes, in_shared
):
    """Each block owns ⌈H/unit_blocks⌉ hidden units (the last fewer, or none) of ⌈B/slices⌉ rows,
    and ``lanes`` threads share a (unit, row)'s dot products: one-step sequences, so that the
    simulator's one-block barrier does not matter."""
    hidden, threads = 5, gpu.SEQUENCE_THREADS
    units = -(-hidden // unit_blocks)
    shared_bytes = 4 * threads * 4 + (4 * units * hidden * 4 if in_shared else 0)
    plan = (unit_blocks, slices, lanes, in_shared, shared_bytes)
    monkeypatch.setattr(gpu, "plan_sequence", lambda *_: plan)
    model = ln.LSTM(3, hidden, bidirectional=True, seed=4)
    x, hx = random_call(rng, model, batch=3, steps=1)
    assert_same_as_cpu(model, x, hx, lengths=np.array([1, 0, 1]))


@pytest.mark.skipif(SIMULATED, reason="plans for a real GPU; the simulator runs one block")
def test_sequence_plan():
    """``plan_sequence`` on a GPU of 132 SMs that holds one 256-thread block an SM with 48 KiB of
    shared memory and four with the partial sums alone (an H200 holds one either way: the kernel
    takes 168 registers a thread)."""
    from lstm_numba import gpu

    def resident(shared_bytes):
        return 132 if shared_bytes > 24 * 1024 else 528

    def plan(batch, hidden, itemsize=4):
        return gpu.plan_sequence(hidden, hidden, batch, itemsize, 256, resident)

    # 11 units' W_hh rows (4·256 values each) fit beside the partial sums: 24 blocks.
    assert plan(1, 256) == (24, 1, 16, True, 4 * 256 * 4 + 11 * 4 * 256 * 4)
    # 5 blocks a unit slice: 52 rows each (the last 48), the fewest lanes for 572 pairs.
    assert plan(256, 256) == (24, 5, gpu.SEQUENCE_MIN_LANES, True, 4 * 256 * 4 + 11 * 4 * 256 * 4)
    # H = 1024: 2 units a block would take 512 blocks, more than 132: W_hh from L2, 2 units each.
    assert plan(1, 1024) == (528, 1, 32, False, 4 * 256 * 4)
    assert plan(1, 2000, itemsize=8) == (528, 1, 32, False, 4 * 256 * 8)
    for batch in (1, 3, 16, 100, 1000):
        for hidden in (1, 7, 64, 300, 1024, 5000):
            for itemsize in (4, 8):
                unit_blocks, slices, lanes, _, shared_bytes = plan(batch, hidden, itemsize)
                assert unit_blocks * slices <= resident(shared_bytes)
                assert shared_bytes <= gpu.SHARED_BYTES
                assert unit_blocks <= hidden and slices <= batch
                assert slices * -(-batch // slices) >= batch  # every row in a slice
                assert 256 % lanes == 0 and gpu.SEQUENCE_MIN_LANES <= lanes <= gpu.SEQUENCE_LANES
    with pytest.raises(RuntimeError, match="no block of 1024 threads fits"):
        gpu.plan_sequence(256, 256, 1, 4, 1024, lambda shared_bytes: 0)


def test_which_sequence_kernel():
    """The tiled kernel from 64 Ki (row, unit) pairs (where it won on an H200) and a full tile of
    rows (64)."""
    from lstm_numba import gpu

    assert gpu.takes_tiled(256, 256) and gpu.takes_tiled(128, 512) and gpu.takes_tiled(64, 1024)
    assert not gpu.takes_tiled(128, 256) and not gpu.takes_tiled(64, 512)
    assert not gpu.takes_tiled(16, 4096) and not gpu.takes_tiled(1, 10**6)
    if not SIMULATED:  # the simulator runs one block
        # tiles of 64 rows × 16 units: 4 × 64 = 256 for 132 blocks; 4 × 16 = 64; 2 × 63 = 126
        assert gpu.plan_tiled(256, 1024, 132) == 132
        assert gpu.plan_tiled(256, 256, 132) == 64
        assert gpu.plan_tiled(65, 1000, 528) == 126


@pytest.mark.skipif(SIMULATED, reason="the simulator's kernels do not warn")
@pytest.mark.skipif(not NUMBA_CUDA, reason="numba-cuda is not installed (pip install -e '.[test]')")
def test_small_grids_do_not_warn():
    """Our launches are small on purpose (24 blocks hold W_hh at H = 256): numba-cuda's warning
    for grids under 128 blocks would only alarm users. Configuring a launch needs no GPU."""
    import warnings

    from lstm_numba import gpu

    with pytest.warns(Warning, match="under-utilization"):  # what it hides
        gpu.input_projection[(1, 3), (16, 16)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        launch = gpu.configured(gpu.input_projection, (1, 2), (16, 16))
    assert launch.griddim == (1, 2, 1)


@runs_kernels
def test_unbatched_and_empty_batch(gpu, rng):
    model = ln.LSTM(3, 4, num_layers=2, seed=5)
    x, (h0, c0) = random_call(rng, model, batch=1, steps=3)
    y, (h_n, c_n) = model(x[0], (h0[:, 0], c0[:, 0]), device="cuda")
    y_cpu, (h_cpu, c_cpu) = model(x[0], (h0[:, 0], c0[:, 0]))
    assert y.shape == y_cpu.shape and h_n.shape == h_cpu.shape
    assert_close(y, y_cpu)
    assert_close(c_n, c_cpu)
    y, (h_n, c_n) = model(np.zeros((0, 3, 3), np.float32), device="cuda")
    assert y.shape == (0, 3, 4) and h_n.shape == (2, 0, 4) and c_n.shape == (2, 0, 4)


@runs_kernels
def test_to_cuda_keeps_weights_and_follows_updates(gpu, rng):
    model = ln.LSTM(3, 4, seed=6).to("cuda")
    assert model._device_layers is not None
    x, hx = random_call(rng, model)
    assert_same_as_cpu(model, x, hx)
    model.weight_hh_l0 = rng.standard_normal((16, 4)).astype(np.float32)  # refreshes the copy
    assert_same_as_cpu(model, x, hx)
    model.load_state_dict(ln.LSTM(3, 4, seed=7).state_dict())
    assert_same_as_cpu(model, x, hx)
    assert model.to("cpu")._device_layers is None


@runs_kernels
def test_a_frozen_copy_keeps_its_weights_on_the_gpu(gpu, rng):
    model = ln.LSTM(3, 4, seed=6).to("cuda")
    frozen = model.freeze()
    assert frozen.frozen and frozen._device_layers is not None
    x, hx = random_call(rng, model)
    assert_same_as_cpu(frozen, x, hx)


@runs_kernels
def test_initial_states_are_not_modified(gpu, rng):
    model = ln.LSTM(3, 4, seed=8)
    x, (h0, c0) = random_call(rng, model)
    before = h0.copy(), c0.copy()
    model(x, (h0, c0), device="cuda")
    np.testing.assert_array_equal(h0, before[0])
    np.testing.assert_array_equal(c0, before[1])


@pytest.fixture
def device_arrays(monkeypatch):
    """Numba device arrays as the model takes them: on a GPU as they are; under the simulator,
    whose arrays lack ``__cuda_array_interface__`` (and its ``cuda`` ``as_cuda_array``), they are
    marked as on the device, so that the paths of device arrays in and out run."""
    from numba import cuda

    if SIMULATED:
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

        real = dispatch.is_gpu_array
        monkeypatch.setattr(
            dispatch, "is_gpu_array", lambda value: real(value) or isinstance(value, FakeCUDAArray)
        )
        monkeypatch.setattr(cuda, "as_cuda_array", lambda value: value, raising=False)
    return cuda


@runs_kernels
def test_stream_of_device_arrays_matches_cpu(gpu, device_arrays, rng):
    """``Stream.step`` on device chunks, with lengths on the host, on the device or none, and
    with the gates: device arrays out, the state carried on as the CPU stream carries it."""
    model = ln.LSTM(3, 4, num_layers=2, seed=10)
    on_cpu, on_gpu = model.stream(3), model.stream(3)
    for lengths, lengths_on_device in (([2, 0, 1], False), (None, False), ([0, 2, 1], True)):
        chunk = rng.standard_normal((3, 2, 3)).astype(np.float32)
        y = on_cpu.step(chunk, lengths)
        if lengths_on_device:
            lengths = device_arrays.to_device(np.array(lengths))
        y_gpu = on_gpu.step(device_arrays.to_device(chunk), lengths)
        assert dispatch.is_gpu_array(y_gpu)
        assert_close(y_gpu.copy_to_host(), y)
        for state, state_gpu in zip(on_cpu.state, on_gpu.state, strict=True):
            assert isinstance(state_gpu, np.ndarray)
            assert_close(state_gpu, state)
    y_gpu, gates = on_gpu.step(device_arrays.to_device(chunk), return_gates=True)
    y, gates_cpu = on_cpu.step(chunk, return_gates=True)
    assert_close(y_gpu.copy_to_host(), y)
    assert_close(gates.cell.copy_to_host(), gates_cpu.cell)
    y_gpu = on_gpu.step(device_arrays.to_device(np.ascontiguousarray(chunk[:, 0])))  # (B, I)
    assert dispatch.is_gpu_array(y_gpu) and y_gpu.shape == (3, 4)
    assert_close(y_gpu.copy_to_host(), on_cpu.step(chunk[:, 0]))


@runs_kernels
def test_main_job_runs_on_the_gpu(gpu, capsys):
    """``python -m lstm_numba --device cuda``: checked against the reference there."""
    from lstm_numba.__main__ import main

    arguments = ["--batch", "2", "--steps", "3", "--input-size", "3", "--hidden-size", "4"]
    assert main([*arguments, "--device", "cuda", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "device: cuda" in out and "OK" in out


@runs_kernels
def test_gpu_benchmark_script_runs(gpu, capsys):
    """``benchmarks/compare.py --device cuda``, ready for a real GPU: one tiny shape."""
    sys.path.insert(0, str(pathlib.Path(__file__).parent.parent / "benchmarks"))
    try:
        import compare
    finally:
        sys.path.pop(0)
    compare.main(["--device", "cuda", "--shapes", "2,3,4,5", "--repeats", "1", "--lengths"])
    table = capsys.readouterr().out.splitlines()[-1]
    assert table.startswith("| (2, 3, 4, 5) |"), table


def import_gpu_profile():
    """``benchmarks.gpu_profile``, imported from the repository's root."""
    sys.path.insert(0, str(pathlib.Path(__file__).parent.parent))
    try:
        from benchmarks import gpu_profile
    finally:
        sys.path.pop(0)
    return gpu_profile


@runs_kernels
def test_gpu_profile_breakdown_runs(gpu, capsys):
    """``python -m benchmarks.gpu_profile breakdown``, ready for a real GPU: one tiny shape, its
    plan recorded and ``gpu.plan_sequence`` put back."""
    gpu_profile = import_gpu_profile()
    plan_sequence = gpu.plan_sequence
    gpu_profile.main(["breakdown", "--shapes", "2,3,4,5", "--repeats", "1"])
    row = capsys.readouterr().out.splitlines()[-1]
    assert row.startswith("| (2, 3, 4, 5) |") and row.endswith("|"), row
    assert "((1, " in row, row  # the plan: H = 5 in one unit block (row slices on a real GPU)
    assert gpu.plan_sequence is plan_sequence


@runs_kernels
def test_gpu_profile_kernels_runs(gpu, capsys):
    """``python -m benchmarks.gpu_profile kernels``: both sequence kernels on one tiny shape."""
    gpu_profile = import_gpu_profile()
    takes_tiled = gpu.takes_tiled
    gpu_profile.main(["kernels", "--shapes", "2,3,4,5", "--repeats", "1"])
    cells = capsys.readouterr().out.splitlines()[-1].split("|")
    assert cells[1].strip() == "(2, 3, 4, 5)" and float(cells[5]) < 1e-5, cells
    assert float(cells[6]) > 0, cells  # the projection's time
    assert gpu.takes_tiled is takes_tiled


@runs_kernels
def test_device_arrays_in_device_arrays_out(gpu, device_arrays, rng):
    """Numba device arrays (and on a GPU, CuPy arrays and torch CUDA tensors) in: the GPU path,
    results of the same kind."""
    model = ln.LSTM(3, 4, seed=9)
    x, (h0, c0) = random_call(rng, model)
    hx = tuple(device_arrays.to_device(state) for state in (h0, c0))
    y, (h_n, c_n) = model(device_arrays.to_device(x), hx)  # device="auto" follows the data
    assert all(dispatch.is_gpu_array(array) for array in (y, h_n, c_n))
    y_cpu, (h_cpu, c_cpu) = model(x, (h0, c0))
    for array, expected in ((y, y_cpu), (h_n, h_cpu), (c_n, c_cpu)):
        assert_close(array.copy_to_host(), expected)
    if not REAL_GPU:
        return
    for name in ("cupy", "torch"):
        module = pytest.importorskip(name)
        x_gpu = module.asarray(x) if name == "cupy" else module.from_numpy(x).cuda()
        y_gpu, _ = model(x_gpu)
        assert type(y_gpu) is type(x_gpu)
        host = module.asnumpy(y_gpu) if name == "cupy" else y_gpu.cpu().numpy()
        assert_close(host, model(x)[0])


@pytest.mark.skipif(not REAL_GPU, reason="needs a real GPU: several blocks, the grid barrier")
@pytest.mark.parametrize(
    "shape, options",
    [
        ((1, 40, 64, 1024), {}),  # on an H200: 132 blocks reading W_hh from L2
        ((16, 30, 100, 257), {"bidirectional": True}),  # W_hh slices in shared memory
        ((5, 12, 48, 2000), {"dtype": np.float64}),
        ((64, 20, 32, 512), {"num_layers": 2, "proj_size": 96}),
        ((128, 20, 32, 512), {"num_layers": 2, "proj_size": 96}),  # tiled from here on
        ((300, 9, 40, 240), {"bidirectional": True, "dtype": np.float64}),
        ((1000, 6, 16, 1100), {"peepholes": True}),  # more tiles than blocks
    ],
)
def test_realistic_shapes_match_cpu(gpu, rng, monkeypatch, shape, options):
    """Shapes that spread the hidden units over many blocks, synchronised by the grid barrier
    (the simulator runs one block)."""
    plans = []
    for name in ("plan_sequence", "plan_tiled"):
        plan = getattr(gpu, name)
        monkeypatch.setattr(gpu, name, lambda *a, plan=plan: plans.append(plan(*a)) or plans[-1])
    batch, steps, inputs, hidden = shape
    model = ln.LSTM(inputs, hidden, **options, seed=11)
    x = rng.standard_normal((batch, steps, inputs)).astype(model.dtype)
    lengths = rng.integers(1, steps + 1, batch)
    assert_same_as_cpu(model, x, lengths=lengths)
    if not gpu.takes_tiled(batch, hidden):
        assert plans and all(unit_blocks > 1 for unit_blocks, *_ in plans), plans
    else:
        assert plans and all(blocks > 1 for blocks in plans), plans


@pytest.mark.skipif(SIMULATED, reason="the simulator does not compile")
@pytest.mark.skipif(not NUMBA_CUDA, reason="numba-cuda is not installed (pip install -e '.[test]')")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("proj_size", [0, 2])
def test_kernels_compile_to_ptx(ptx_without_a_gpu, dtype, proj_size):
    """A real type check of the kernels without a GPU: PTX for sm_90 (the grid barrier is only
    linked at launch)."""
    from numba import cuda

    kernels = import_gpu_profile().kernel_signatures(dtype, proj_size)
    for name, (kernel, signature) in kernels.items():
        try:
            ptx, _ = cuda.compile_ptx(kernel.py_func, signature, cc=(9, 0))
        except Exception as error:  # no NVVM (CUDA toolkit) on this machine
            if "nvvm" in str(error).lower():
                pytest.skip(f"cannot compile for CUDA here: {error}")
            raise
        assert ".visible .entry" in ptx, name
        assert ("fma.rn.f32" if dtype == np.float32 else "fma.rn.f64") in ptx, name


@pytest.mark.skipif(SIMULATED, reason="the simulator does not compile")
@pytest.mark.skipif(not NUMBA_CUDA, reason="numba-cuda is not installed (pip install -e '.[test]')")
def test_gpu_profile_registers_runs(capsys):
    """``python -m benchmarks.gpu_profile registers`` needs no GPU: each kernel's registers and
    spills from ``ptxas`` where the CUDA toolkit is installed, else a line saying it is not."""
    import shutil

    gpu_profile = import_gpu_profile()
    try:
        gpu_profile.main(["registers"])
    except Exception as error:  # no NVVM (CUDA toolkit) on this machine
        if "nvvm" in str(error).lower():
            pytest.skip(f"cannot compile for CUDA here: {error}")
        raise
    lines = capsys.readouterr().out.splitlines()
    if shutil.which("ptxas") is None:
        assert lines == ["registers: no ptxas on the PATH (the CUDA toolkit's)"]
        return
    rows = [line for line in lines if line.startswith("| lstm_") or line.startswith("| input_")]
    assert len(rows) == 6, lines
    assert all(" registers" in row for row in rows), rows
