"""int8 weight-only matrix products: float32 activations times a weight stored as int8 plus float32 scales.

A weight matrix ``W`` of shape (out, in) is stored as ``q`` (out, in) int8 and ``scales`` (out, G) float32,
with ``G`` groups of ``in // G`` consecutive input features per output row (``G = 1``: one scale per
output channel). Dequantised, ``W[j, i] = q[j, i] * scales[j, i // (in // G)]``; the quantisation is
symmetric: ``scale = max|w| / 127`` over the group and ``q = round(w / scale)`` in [-127, 127].

- ``quantize_int8(w, group_size) -> (q, scales)``: ``w`` (out, in) float; ``group_size`` 0 means one group.
- ``dequantize_int8(q, scales) -> w`` (float32): the reference's dequantisation (tests, small lookups).
- ``dequantize_rows(q, scales, ids) -> rows``: rows ``ids`` of the dequantised matrix (embedding lookups).
- ``int8_matmul(x, q, scales) -> y``: ``y = x @ dequantize_int8(q, scales).T`` for ``x`` (M, in) float32.

The Numba kernel never makes a float32 copy of the matrix. For one row of ``x`` (a generated token) it is
a matrix-vector product parallel over blocks of output rows, ``ROWS`` (4) rows per pass over ``x``: each
element of ``x`` is loaded once for four int8 rows, which are converted to float32 in vector registers; one
sum per group and row, multiplied by that group's scale (``rows_int8``, which the fused decoding step of
``kernels/decode.py`` shares). Generation is bound by reading the weights, and int8 rows are a quarter of
the bytes of float32 ones. For several rows of ``x`` (a prompt) it works through blocks of eight output
rows: the block is dequantised (scales applied) into a small float32 buffer that stays in the core's
cache, and every row of ``x`` is multiplied with it.
"""
import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ..errors import MiniGPTError
from .fastmath import FASTMATH, SMALL_WORK, renamed_copy
from .registry import kernel

QMAX = 127
ROW_BLOCK = 8  # output rows dequantised together by the multi-row kernel
ROWS = 4  # output rows the matrix-vector kernel computes per pass over x
GEMV_BLOCK = 64  # output rows per work item of the matrix-vector kernel
PREFETCH_ROWS = 16  # the matrix-vector kernel asks for the rows this far ahead while it works on the current ones


# ---- quantisation (NumPy: runs once per matrix) --------------------------------------------------

def _groups(n_in, group_size):
    if group_size in (None, 0) or group_size >= n_in:
        return 1
    if group_size < 0 or n_in % group_size:
        raise MiniGPTError(f"int8 group size {group_size} must divide the input width {n_in}")
    return n_in // group_size


def quantize_int8(w, group_size=0):
    """Symmetric int8 quantisation of ``w`` (out, in): ``(q int8 (out, in), scales float32 (out, G))``."""
    w = np.asarray(w)
    if w.ndim != 2 or w.dtype.kind != "f":
        raise MiniGPTError(f"quantize_int8: expected a 2-D float matrix, got {w.dtype} {w.shape}")
    if not np.isfinite(w).all():
        raise MiniGPTError("quantize_int8: the matrix holds NaN or infinite values")
    n_out, n_in = w.shape
    g = _groups(n_in, group_size)
    q = np.empty((n_out, n_in), dtype=np.int8)
    scales = np.empty((n_out, g), dtype=np.float32)
    step = 4096  # rows at a time: the float64 temporaries stay small
    for r0 in range(0, n_out, step):
        blk = w[r0:r0 + step].astype(np.float64).reshape(-1, g, n_in // g)
        amax = np.abs(blk).max(axis=2)
        s = (amax / QMAX).astype(np.float32)
        safe = np.where(s > 0, s, 1.0).astype(np.float64)
        q[r0:r0 + step] = np.clip(np.rint(blk / safe[:, :, None]), -QMAX, QMAX).reshape(-1, n_in)
        scales[r0:r0 + step] = s
    return q, scales


def _check_q(q, scales, what):
    if q.ndim != 2 or q.dtype != np.int8:
        raise MiniGPTError(f"{what}: quantized weight must be a 2-D int8 array, got {q.dtype} {q.shape}")
    if (scales.ndim != 2 or scales.dtype != np.float32 or scales.shape[0] != q.shape[0]
            or scales.shape[1] == 0 or q.shape[1] % scales.shape[1]):
        raise MiniGPTError(f"{what}: scales of shape {scales.shape} ({scales.dtype}) do not fit a quantized "
                           f"weight of shape {q.shape} (need float32 (out, G) with G dividing in)")


def dequantize_int8(q, scales):
    """The float32 matrix that ``(q, scales)`` stand for (out, in)."""
    _check_q(q, scales, "dequantize_int8")
    n_out, n_in = q.shape
    g = scales.shape[1]
    return (q.reshape(n_out, g, n_in // g).astype(np.float32) * scales[:, :, None]).reshape(n_out, n_in)


def dequantize_rows(q, scales, ids):
    """Rows ``ids`` (any integer shape) of the dequantised matrix: shape ``ids.shape + (in,)``."""
    ids = np.asarray(ids)
    flat = ids.reshape(-1)
    rows = dequantize_int8(q[flat], scales[flat])
    return rows.reshape(*ids.shape, q.shape[1])


# ---- NumPy reference --------------------------------------------------------------------------------

def int8_matmul_numpy(x, q, scales):
    """``x @ dequantize_int8(q, scales).T``, computed as written."""
    _check_q(q, scales, "int8_matmul")
    return np.asarray(x) @ dequantize_int8(q, scales).T


# ---- Numba --------------------------------------------------------------------------------------------

@intrinsic
def _prefetch(typingctx, arr, i, j):
    """Ask the CPU to start loading the cache line of ``arr[i, j]`` (a hint: no result, never faults).

    Streaming int8 rows, the kernel spends more instructions per byte than a float32 product does, so
    the hardware prefetcher alone keeps too few loads in flight: measured, the int8 matrix-vector chain
    read ~7 GB/s without this hint and ~18 GB/s (float32's rate) with it."""
    sig = types.void(arr, i, j)

    def codegen(context, builder, signature, args):
        aty = signature.args[0]
        ary = context.make_array(aty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aty, ary, [args[1], args[2]], wraparound=False,
                                       boundscheck=False)
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                            "llvm.prefetch.p0")
        # read, high temporal locality (into every cache level), data cache
        builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return sig, codegen


@numba.njit(fastmath=FASTMATH, cache=True)
def rows_int8(x, q, s, j0, j1, y):
    """y[r, j] = sum over groups of s[j, g] * (x[r, group g] . q[j, group g]) for j in [j0, j1), ROWS at a
    time: each element of x is loaded once per ROWS weight rows."""
    n = x.shape[0]
    n_in = q.shape[1]
    g = s.shape[1]
    gs = n_in // g
    n_out = q.shape[0]
    j = j0
    while j + ROWS <= j1:
        for jj in range(j + PREFETCH_ROWS, min(j + PREFETCH_ROWS + ROWS, n_out)):
            for i in range(0, n_in, 64):  # one hint per 64-byte cache line
                _prefetch(q, jj, i)
        for r in range(n):
            xr = x[r]
            t0 = t1 = t2 = t3 = np.float32(0.0)
            for k in range(g):
                xg = xr[k * gs:(k + 1) * gs]
                q0 = q[j, k * gs:(k + 1) * gs]
                q1 = q[j + 1, k * gs:(k + 1) * gs]
                q2 = q[j + 2, k * gs:(k + 1) * gs]
                q3 = q[j + 3, k * gs:(k + 1) * gs]
                a0 = a1 = a2 = a3 = np.float32(0.0)
                for i in range(gs):
                    xi = xg[i]
                    a0 += xi * np.float32(q0[i])
                    a1 += xi * np.float32(q1[i])
                    a2 += xi * np.float32(q2[i])
                    a3 += xi * np.float32(q3[i])
                t0 += a0 * s[j, k]
                t1 += a1 * s[j + 1, k]
                t2 += a2 * s[j + 2, k]
                t3 += a3 * s[j + 3, k]
            y[r, j] = t0
            y[r, j + 1] = t1
            y[r, j + 2] = t2
            y[r, j + 3] = t3
        j += ROWS
    while j < j1:
        for r in range(n):
            xr = x[r]
            t = np.float32(0.0)
            for k in range(g):
                xg = xr[k * gs:(k + 1) * gs]
                qg = q[j, k * gs:(k + 1) * gs]
                a = np.float32(0.0)
                for i in range(gs):
                    a += xg[i] * np.float32(qg[i])
                t += a * s[j, k]
            y[r, j] = t
        j += 1


def _gemv(x, q, scales, y):
    """y = x @ W.T for few rows of x: blocks of output rows, each computed ROWS rows at a time."""
    n_out = q.shape[0]
    nblk = (n_out + GEMV_BLOCK - 1) // GEMV_BLOCK
    for b in numba.prange(nblk):
        rows_int8(x, q, scales, b * GEMV_BLOCK, min((b + 1) * GEMV_BLOCK, n_out), y)


def _gemm(x, q, scales, y):
    """y = x @ W.T for several rows of x: blocks of ROW_BLOCK output rows dequantised into a cached
    buffer, then each row of x dotted with each row of the buffer."""
    m = x.shape[0]
    n_out, n_in = q.shape
    g = scales.shape[1]
    gs = n_in // g
    nblk = (n_out + ROW_BLOCK - 1) // ROW_BLOCK
    for b in numba.prange(nblk):
        j0 = b * ROW_BLOCK
        j1 = min(j0 + ROW_BLOCK, n_out)
        buf = np.empty((ROW_BLOCK, n_in), dtype=np.float32)
        for jj in range(j1 - j0):
            row = q[j0 + jj]
            dst = buf[jj]
            for k in range(g):
                s = scales[j0 + jj, k]
                rg = row[k * gs:(k + 1) * gs]
                dg = dst[k * gs:(k + 1) * gs]
                for i in range(gs):
                    dg[i] = np.float32(rg[i]) * s
        for r in range(m):
            xr = x[r]
            for jj in range(j1 - j0):
                src = buf[jj]
                acc = np.float32(0.0)
                for i in range(n_in):
                    acc += xr[i] * src[i]
                y[r, j0 + jj] = acc


_SIG = (types.Array(types.float32, 2, "C", readonly=True), types.Array(types.int8, 2, "C", readonly=True),
        types.Array(types.float32, 2, "C", readonly=True), types.Array(types.float32, 2, "C"))
_kernels = {}


def _kernel(name, parallel):
    key = (name, parallel)
    fn = _kernels.get(key)
    if fn is None:
        py = {"gemv": _gemv, "gemm": _gemm}[name]
        if not parallel:
            py = renamed_copy(py, "_serial")
        fn = numba.njit(_SIG, parallel=parallel, fastmath=FASTMATH, cache=True)(py)
        _kernels[key] = fn
    return fn


def int8_matmul_numba(x, q, scales):
    x = np.asarray(x)
    _check_q(q, scales, "int8_matmul")
    if x.ndim != 2 or x.shape[1] != q.shape[1]:
        raise MiniGPTError(f"int8_matmul: input of shape {x.shape} does not match a weight of shape {q.shape}")
    if x.dtype != np.float32:  # float64 (gradient checks, references): the exact NumPy path
        return int8_matmul_numpy(x, q, scales)
    x = np.ascontiguousarray(x)
    y = np.empty((x.shape[0], q.shape[0]), dtype=np.float32)
    parallel = q.size * max(1, x.shape[0] // 8) >= SMALL_WORK * 16
    if x.shape[0] == 1:
        _kernel("gemv", parallel)(x, np.ascontiguousarray(q), np.ascontiguousarray(scales), y)
    elif x.shape[0] > 0:
        _kernel("gemm", parallel)(x, np.ascontiguousarray(q), np.ascontiguousarray(scales), y)
    return y


# ---- the kernel, declared once: NumPy reference, Numba version (registry.py picks one) ----------

int8_matmul = kernel(
    int8_matmul_numpy, int8_matmul_numba,
    """``x @ W.T`` for ``x`` (M, in) and the int8 weight ``W`` (out, in) given as ``(q, scales)``.""")
