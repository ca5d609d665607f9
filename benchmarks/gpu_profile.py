"""Where the GPU forward's time goes, for a session with a GPU and a few minutes of it.

    python -m benchmarks.gpu_profile breakdown   # projection (ours, cuBLAS) and sequence kernel
    python -m benchmarks.gpu_profile barrier     # one grid barrier, by block count
    python -m benchmarks.gpu_profile sweep       # lstm_sequence's launch constants, register cap
    python -m benchmarks.gpu_profile kernels     # lstm_sequence against lstm_sequence_tiled
    python -m benchmarks.gpu_profile kernels --geometry 8,4   # another GEMM register tile
    python -m benchmarks.gpu_profile registers   # registers and spills (ptxas; no GPU needed)

``breakdown``: for each shape, the whole forward, our ``input_projection`` alone, the same GEMM
through torch's cuBLAS (TF32 off; skipped without torch), the sequence kernel's share (forward less
projection) per time step, and the launch plan: ``gpu.plan_sequence``'s (unit blocks, batch slices,
lanes, W_hh in shared memory) with the blocks the device holds at once (48 KiB of shared memory;
the partial sums alone), or ("tiled", blocks) for ``gpu.plan_tiled``'s. ``barrier``: an empty
cooperative kernel of 1 and 2001 grid barriers, by block count. ``sweep``: the forward's time for
register caps (both sequence kernels) × threads a block × fewest lanes. ``kernels``: the forward
with each sequence kernel whatever the batch (B = 16–256 by default), and its largest difference
from the CPU forward. ``--geometry R,C``: GEMM tiles of R × C outputs a thread
(``gpu.GEMM_ROW_WORK``, ``GEMM_COLUMN_WORK``), for the projection and the tiled kernel; they are
compiled in, so give each geometry its own ``NUMBA_CACHE_DIR``. ``registers``: ``ptxas -v`` on each
kernel's PTX for sm_90. float32, one layer, x and weights on the GPU, best of ``--repeats`` calls
that each end with a device synchronisation. docs/performance.md ("GPU") has the H200's numbers.
CUDA is imported when a command runs (asv imports this module to discover benchmarks; it holds
none).
"""

import argparse
import math

import numpy as np

import lstm_numba
from lstm_numba import dispatch

from .compare import best_seconds, torch_on_cuda

BATCH_SWEEP = [(b, 64, h, h) for h in (256, 512, 1024) for b in (16, 64, 128, 256)]

SHAPES = [
    (1, 256, 256, 256),
    (1, 256, 1024, 1024),
    (16, 256, 1024, 1024),
    (64, 100, 1024, 1024),
    (256, 64, 512, 512),
    (256, 256, 256, 256),
    (256, 256, 1024, 1024),
]


def synchronized(call):
    """``call`` followed by a device synchronisation, so that a timer sees the kernels' time."""
    from numba import cuda

    def run():
        call()
        cuda.synchronize()

    return run


def on_gpu(batch, steps, inputs, hidden):
    """A seeded float32 model with its weights on the GPU, and a random (B, T, I) device input."""
    from numba import cuda

    model = lstm_numba.LSTM(inputs, hidden, seed=0).to("cuda")
    rng = np.random.default_rng(0)
    return model, cuda.to_device(rng.standard_normal((batch, steps, inputs), dtype=np.float32))


def recording_plans(plans):
    """Install a ``gpu.plan_sequence`` that appends (plan, blocks held with 48 KiB, blocks held
    with the partial sums alone) to ``plans``, and a ``gpu.plan_tiled`` that appends ("tiled",
    blocks); returns the originals, to put back."""
    from lstm_numba import gpu

    plan_sequence, plan_tiled = gpu.plan_sequence, gpu.plan_tiled

    def recording(hidden, out, batch, itemsize, threads, resident_blocks):
        plan = plan_sequence(hidden, out, batch, itemsize, threads, resident_blocks)
        sizes = gpu.SHARED_BYTES, 4 * threads * itemsize
        held = [resident_blocks(b) for b in sizes] if resident_blocks else ["simulator"] * 2
        plans.append((plan, *held))
        return plan

    def recording_tiled(batch, hidden, resident_blocks):
        plans.append(("tiled", plan_tiled(batch, hidden, resident_blocks)))
        return plans[-1][1]

    gpu.plan_sequence, gpu.plan_tiled = recording, recording_tiled
    return plan_sequence, plan_tiled


def cublas_seconds(rows, inputs, columns, repeats):
    """Seconds of torch.addmm (cuBLAS, TF32 off) on (rows, inputs) · (inputs, columns); None
    without torch on CUDA."""
    torch = torch_on_cuda()
    if torch is None:
        return None
    a, w = torch.randn(rows, inputs, device="cuda"), torch.randn(columns, inputs, device="cuda")
    bias = torch.randn(columns, device="cuda")
    return best_seconds(synchronized(lambda: torch.addmm(bias, a, w.T)), repeats)


def projection_seconds(model, x, repeats):
    """Seconds of our ``input_projection`` alone on the first layer of ``model`` (on the GPU) and
    x (B, T, I)."""
    from numba import cuda

    from lstm_numba import gpu

    layer = model._device_layers[0]
    rows, inputs = x.shape[0] * x.shape[1], x.shape[2]
    columns = layer["weight_ih"].shape[0]
    projected = cuda.device_array((rows, columns), np.float32)
    blocks = (math.ceil(columns / gpu.GEMM_COLUMNS), math.ceil(rows / gpu.GEMM_ROWS))
    launch = gpu.configured(gpu.input_projection, blocks, (gpu.GEMM_THREADS,) * 2)
    arguments = x.reshape(rows, inputs), layer["weight_ih"], layer["bias"], projected
    return best_seconds(synchronized(lambda: launch(*arguments)), repeats)


def breakdown(shapes, repeats):
    from lstm_numba import gpu

    header = "(B, T, I, H) | forward ms | our projection ms | cuBLAS ms | sequence µs a step"
    print(f"| {header} | plan, blocks held (48 KiB, partial sums alone) |")
    print("|---|---|---|---|---|---|")
    plans = []
    originals = recording_plans(plans)
    try:
        for batch, steps, inputs, hidden in shapes:
            model, x = on_gpu(batch, steps, inputs, hidden)
            run = synchronized(lambda model=model, x=x: model(x, device="cuda"))
            forward = best_seconds(run, repeats)
            ours = projection_seconds(model, x, repeats)
            theirs = cublas_seconds(batch * steps, inputs, 4 * hidden, repeats)
            cublas = "n/a" if theirs is None else f"{theirs * 1e3:.3f}"
            per_step = (forward - ours) / steps * 1e6
            print(
                f"| {(batch, steps, inputs, hidden)} | {forward * 1e3:.3f} | {ours * 1e3:.3f} | "
                f"{cublas} | {per_step:.1f} | {plans[-1]} |",
                flush=True,
            )
    finally:
        gpu.plan_sequence, gpu.plan_tiled = originals


def kernels(shapes, repeats):
    """Each shape's forward with ``lstm_sequence`` and with ``lstm_sequence_tiled``, and our
    projection alone."""
    from lstm_numba import gpu

    takes_tiled = gpu.takes_tiled
    print(f"GEMM tile: {gpu.GEMM_ROW_WORK} × {gpu.GEMM_COLUMN_WORK} a thread")
    print(
        "| (B, T, I, H) | lstm_sequence ms | lstm_sequence_tiled ms | ratio | max error "
        "| projection ms | projection GFLOP/s |"
    )
    print("|---|---|---|---|---|---|---|")
    try:
        for shape in shapes:
            model, x = on_gpu(*shape)
            expected = model(dispatch.to_host(x))[0]
            times, error = [], 0.0
            for tiled in (False, True):  # lstm_sequence, then the tiled kernel
                gpu.takes_tiled = lambda batch, hidden, tiled=tiled: tiled
                run = synchronized(lambda model=model, x=x: model(x, device="cuda"))
                times.append(best_seconds(run, repeats))
                y = dispatch.to_host(model(x, device="cuda")[0])
                error = max(error, float(np.abs(y - expected).max() / np.abs(expected).max()))
            dot_ms, tiled_ms = (t * 1e3 for t in times)
            projection = projection_seconds(model, x, repeats)
            batch, steps, inputs, hidden = shape
            rate = 2 * batch * steps * inputs * 4 * hidden / projection / 1e9
            ratio = dot_ms / tiled_ms
            print(
                f"| {shape} | {dot_ms:.3f} | {tiled_ms:.3f} | {ratio:.2f} | {error:.1e} | "
                f"{projection * 1e3:.3f} | {rate:.0f} |",
                flush=True,
            )
    finally:
        gpu.takes_tiled = takes_tiled


def set_geometry(row_work, column_work):
    """GEMM tiles of row_work × column_work outputs a thread, before any kernel compiles."""
    from lstm_numba import gpu

    gpu.GEMM_ROW_WORK, gpu.GEMM_COLUMN_WORK = row_work, column_work
    gpu.GEMM_ROWS = gpu.GEMM_THREADS * row_work
    gpu.GEMM_COLUMNS = gpu.GEMM_THREADS * column_work
    gpu.GEMM_ROWS_PADDED, gpu.GEMM_COLUMNS_PADDED = gpu.GEMM_ROWS + 1, gpu.GEMM_COLUMNS + 1


def barrier(block_counts, repeats):
    from numba import cuda

    @cuda.jit
    def barriers(count, out):
        grid = cuda.cg.this_grid()
        for _ in range(count):
            grid.sync()
        if cuda.grid(1) == 0:
            out[0] = count

    out = cuda.to_device(np.zeros(1, np.int64))
    for blocks in block_counts:
        one, many = (
            best_seconds(synchronized(lambda n=n, k=barriers[blocks, 256]: k(n, out)), repeats)
            for n in (1, 2001)
        )
        print(f"{blocks} blocks of 256 threads: {(many - one) / 2000 * 1e6:.2f} µs a barrier")


def sweep(shapes, repeats):
    from numba import cuda

    from lstm_numba import gpu

    kernels = gpu.lstm_sequence, gpu.lstm_sequence_tiled
    constants = gpu.SEQUENCE_THREADS, gpu.SEQUENCE_MIN_LANES
    cases = [on_gpu(*shape) for shape in shapes]
    print("| registers, threads, fewest lanes | " + " | ".join(map(str, shapes)) + " |")
    print("|---" * (len(shapes) + 1) + "|")
    try:
        for registers in (None, 128, 64):
            # both sequence kernels capped: fewer registers, more blocks an SM (the tiled kernel's
            # blocks are GEMM_THREADS² threads whatever the threads and lanes below)
            gpu.lstm_sequence, gpu.lstm_sequence_tiled = (
                kernel if registers is None else cuda.jit(max_registers=registers)(kernel.py_func)
                for kernel in kernels
            )
            for threads, lanes in ((256, 4), (256, 8), (128, 4), (512, 4), (1024, 4)):
                gpu.SEQUENCE_THREADS, gpu.SEQUENCE_MIN_LANES = threads, lanes
                cells = []
                for model, x in cases:
                    run = synchronized(lambda model=model, x=x: model(x, device="cuda"))
                    try:
                        cells.append(f"{best_seconds(run, repeats) * 1e3:.2f}")
                    except RuntimeError as error:  # no such block fits: plan_sequence says so
                        cells.append(f"n/a: {error}"[:40])
                row = f"| {registers}, {threads}, {lanes} | " + " | ".join(cells) + " |"
                print(row, flush=True)
    finally:
        gpu.lstm_sequence, gpu.lstm_sequence_tiled = kernels
        gpu.SEQUENCE_THREADS, gpu.SEQUENCE_MIN_LANES = constants


def kernel_arguments(dtype, proj_size=0):
    """Arguments of a ``gpu.lstm_sequence_tiled`` launch (``gpu.lstm_sequence`` takes three more:
    ``weights_in_shared``, ``unit_blocks``, ``lanes``) as NumPy arrays and scalars, for typing."""
    model = lstm_numba.LSTM(3, 4, bidirectional=True, proj_size=proj_size, dtype=dtype)
    onnx, kinds, parameters, peepholes, bound, input_forget = model._cell(0)
    stacks = model._layers[0]
    batch, rows, out = 2, 6, model.output_size
    return (
        np.zeros((rows, 2 * 16), dtype), stacks["weight_hh"][0], stacks["weight_hr"][0], onnx,
        kinds[0], parameters[0], peepholes[0], bound, input_forget,
        np.zeros((2, batch, out), dtype), np.zeros((batch, 4), dtype), np.zeros((batch, 4), dtype),
        np.zeros((rows, 2 * out), dtype), np.zeros(batch, np.int64), 3, 1, True, False,
        np.zeros((5, batch, 3, 4), dtype),
    )  # fmt: skip


def kernel_signatures(dtype, proj_size=0):
    """{name: (kernel, Numba signature)} of the three GPU kernels for ``dtype``."""
    import numba

    from lstm_numba import gpu

    sequence = tuple(numba.typeof(a) for a in kernel_arguments(dtype, proj_size))
    lanes = tuple(numba.typeof(a) for a in (True, 1, 1))
    matrix = numba.from_dtype(np.dtype(dtype))[:, ::1]
    return {
        "lstm_sequence_tiled": (gpu.lstm_sequence_tiled, sequence),
        "lstm_sequence": (gpu.lstm_sequence, sequence + lanes),
        "input_projection": (gpu.input_projection, (matrix, matrix, matrix.dtype[::1], matrix)),
    }


def ptxas_report(ptx, ptxas):
    """``ptxas -v``'s lines on registers and spills for sm_90. PTX from a newer NVVM than the
    ``ptxas`` says a ``.version`` it refuses: it is lowered to the one that ``ptxas`` names."""
    import re
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        source = f"{folder}/kernel.ptx"
        for _ in range(2):
            with open(source, "w") as file:
                file.write(ptx)
            command = [ptxas, "-arch=sm_90", "-v", "-c", source, "-o", f"{folder}/kernel.o"]
            result = subprocess.run(command, capture_output=True, text=True, check=False)
            refused = r"Unsupported \.version \S+; current version is '([\d.]+)'"
            newest = re.search(refused, result.stderr)
            if not newest:
                break
            ptx = re.sub(r"^\.version \S+", f".version {newest[1]}", ptx, count=1, flags=re.M)
    lines = result.stdout + result.stderr
    found = re.findall(r"Used \d+ registers|\d+ bytes spill stores, \d+ bytes spill loads", lines)
    return ", ".join(found) or lines.strip()[-200:]


def registers():
    """Registers and spills a thread of each kernel for sm_90, float32 and float64: numba-cuda's
    PTX through the CUDA toolkit's ``ptxas`` (no GPU needed; a machine without one lends numba-cuda
    the compute capability 9.0 it asks for)."""
    import contextlib
    import shutil
    from unittest import mock

    from numba import cuda
    from numba.cuda import dispatcher

    ptxas = shutil.which("ptxas")
    if ptxas is None:
        print("registers: no ptxas on the PATH (the CUDA toolkit's)")
        return
    sm_90 = mock.Mock(compute_capability=(9, 0))
    stand_in = not dispatch.cuda_status()[0]
    patched = mock.patch.object(dispatcher, "get_current_device", lambda: sm_90)
    with patched if stand_in else contextlib.nullcontext():
        print("| kernel | dtype | ptxas -v (sm_90) |")
        print("|---|---|---|")
        for dtype in (np.float32, np.float64):
            for name, (kernel, signature) in kernel_signatures(dtype).items():
                ptx, _ = cuda.compile_ptx(kernel.py_func, signature, cc=(9, 0))
                report = ptxas_report(ptx, ptxas)
                print(f"| {name} | {np.dtype(dtype).name} | {report} |", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["breakdown", "barrier", "sweep", "kernels", "registers"])
    parser.add_argument("--shapes", nargs="*", help="B,T,I,H shapes (default: seven, T 64–256)")
    parser.add_argument("--blocks", nargs="*", type=int, default=[24, 132, 264])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--geometry", help="R,C: GEMM outputs a thread (rows, columns)")
    args = parser.parse_args(argv)
    if args.geometry:
        set_geometry(*(int(v) for v in args.geometry.split(",")))
    if args.what == "registers":  # needs no GPU
        registers()
        return
    usable, reason = dispatch.cuda_status()
    if not usable:
        raise SystemExit(f"gpu_profile: needs a usable GPU: {reason}")
    default = BATCH_SWEEP if args.what == "kernels" else SHAPES
    shapes = [tuple(int(v) for v in s.split(",")) for s in args.shapes] if args.shapes else default
    print(f"device: {reason}")
    if args.what == "breakdown":
        breakdown(shapes, args.repeats)
    elif args.what == "barrier":
        barrier(args.blocks, args.repeats)
    elif args.what == "kernels":
        kernels(shapes, args.repeats)
    else:
        sweep(shapes, args.repeats)


if __name__ == "__main__":
    main()
