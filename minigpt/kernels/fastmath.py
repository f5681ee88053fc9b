"""Vectorisable ``exp``, ``expm1`` and ``tanh`` for Numba kernels.

The Numba on these machines has no SVML, so ``np.exp`` / ``np.tanh`` inside a kernel compile to one scalar
libm call per element and a loop that calls them cannot be vectorised. The functions here are Numba
*intrinsics*: they emit plain LLVM arithmetic straight into the calling kernel, so a loop over them
becomes SIMD code (16 float32 lanes with AVX-512).

The method is the textbook one:

1. range reduction: ``n = rint(x / ln 2)``, ``r = x - n ln 2`` with ``|r| <= ln(2)/2``; ``ln 2`` is split
   into a short ``hi`` part (``n * hi`` is exact) and a ``lo`` correction (Cody and Waite);
2. ``expm1(r)`` by its Taylor polynomial (degree 7 in float32, 13 in float64, Horner's rule), truncation
   error below one unit in the last place;
3. reconstruction ``exp(x) = (1 + p) * 2**n``, where ``2**n`` is made by writing ``n + bias`` into the
   exponent bits of a float (integer add, shift, bit-cast). ``2**n`` is applied as two factors
   ``2**(n//2) * 2**(n - n//2)`` so that results near overflow and in the subnormal range are right.

The input is clamped first, so ``+inf`` and large ``x`` overflow to ``inf``, ``-inf`` and very negative
``x`` give ``0``, and a NaN input gives NaN. Accuracy (tested): within 2 ulp of ``np.exp`` over the float32
range, and about 2e-16 relative in float64.

The emitted instructions carry no fast-math flags, whatever flags the calling kernel was compiled with:
``reassoc`` would otherwise be free to merge the two halves of ``ln 2`` and ruin the reduction.

``tanh(x) = sign(x) * (-e) / (e + 2)`` with ``e = expm1(-2|x|)``: ``e`` lies in ``(-1, 0]``, nothing
overflows, and for small ``|x|`` the result keeps its relative accuracy (no ``1 - exp`` cancellation).

From Python, :func:`exp`, :func:`expm1` and :func:`tanh` apply the same code to whole arrays (used by the
tests and handy for checking); inside ``@njit`` code call :func:`fast_exp`, :func:`fast_expm1` and
:func:`fast_tanh` on scalars.
"""
import math
import types as pytypes
from decimal import Decimal, getcontext

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from .. import runtime
from ..errors import MiniGPTError

# Fast-math flags for the kernels of this package: everything that helps vectorise except ``nnan`` and
# ``ninf`` (masks, -inf logits and +-1e4 logits must keep IEEE behaviour).
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}


def _ln2_split(mant_bits_hi):
    """(hi, lo, lo_f32): ln 2 = hi + lo, hi with only ``mant_bits_hi`` significant bits."""
    getcontext().prec = 50
    ln2 = Decimal(2).ln()
    m, e = math.frexp(float(ln2))
    hi = math.ldexp(math.floor(math.ldexp(m, mant_bits_hi)), e - mant_bits_hi)
    lo = ln2 - Decimal(hi)
    return hi, float(lo)


# float32: |n| <= 150 needs 8 bits, so a 16-bit hi keeps n * hi exact in float32's 24-bit significand.
_F32_LN2_HI, _F32_LN2_LO = _ln2_split(16)
# float64: |n| <= 1100 needs 11 bits; a 40-bit hi keeps n * hi exact in 53 bits.
_F64_LN2_HI, _F64_LN2_LO = _ln2_split(40)

_PARAMS = {
    # bits: (mantissa bits, exponent bias, int width, clamp lo, clamp hi, ln2 hi, ln2 lo, poly degree)
    32: (23, 127, 32, -104.0, 89.0, _F32_LN2_HI, _F32_LN2_LO, 7),
    64: (52, 1023, 64, -746.0, 710.0, _F64_LN2_HI, _F64_LN2_LO, 13),
}
# Above this n, expm1(x) == exp(x) to working precision; below -this, expm1(x) == -1.
_EXPM1_NLIM = 60


def _const(fty, value):
    if isinstance(fty, ir.FloatType):
        return ir.Constant(fty, float(np.float32(value)))
    return ir.Constant(fty, float(value))


def _call_intr(builder, name, fty, *args):
    fnty = ir.FunctionType(fty, [fty] * len(args))
    fn = cgutils.get_or_insert_function(builder.module, fnty, f"{name}.{'f32' if fty == ir.FloatType() else 'f64'}")
    return builder.call(fn, list(args), fastmath=("contract",))


# Numba's fast-math pass adds the kernel's flags to every float instruction that has *no* flags. Each
# instruction emitted here gets the harmless ``contract`` flag (lets LLVM fuse a*b+c into an FMA, which is
# only more exact), so the kernel's ``reassoc`` / ``nnan`` never reach the range reduction or NaN checks.
def _fl(instr):
    instr.flags.append("contract")
    return instr


def _fadd(b, x, y):
    return _fl(b.fadd(x, y))


def _fsub(b, x, y):
    return _fl(b.fsub(x, y))


def _fmul(b, x, y):
    return _fl(b.fmul(x, y))


def _fdiv(b, x, y):
    return _fl(b.fdiv(x, y))


def _fcmp(b, op, x, y):
    if op == "uno":
        return b.fcmp_unordered(op, x, y, flags=("contract",))
    return b.fcmp_ordered(op, x, y, flags=("contract",))


def _reduce(builder, x, bits):
    """Emit the shared part: clamp, n = rint(x/ln2) (as float), r, and p = expm1(r) (a polynomial)."""
    fty = ir.FloatType() if bits == 32 else ir.DoubleType()
    _, _, _, lo, hi, ln2_hi, ln2_lo, degree = _PARAMS[bits]
    c = lambda v: _const(fty, v)  # noqa: E731
    # clamp with ordered compares: a NaN input becomes `lo` here and is restored at the very end.
    xc = builder.select(_fcmp(builder, ">", x, c(lo)), x, c(lo))
    xc = builder.select(_fcmp(builder, "<", xc, c(hi)), xc, c(hi))
    nf = _call_intr(builder, "llvm.rint", fty, _fmul(builder, xc, c(1.0 / math.log(2.0))))
    r = _fsub(builder, xc, _fmul(builder, nf, c(ln2_hi)))
    r = _fsub(builder, r, _fmul(builder, nf, c(ln2_lo)))
    # expm1(r) = r * (1 + r/2 * (1 + r/3 * (1 + ... ))) -- Taylor, Horner form with 1/k! coefficients.
    coeffs = [1.0 / math.factorial(k) for k in range(1, degree + 1)]
    acc = c(coeffs[-1])
    for a in reversed(coeffs[:-1]):
        acc = _fadd(builder, _fmul(builder, acc, r), c(a))
    p = _fmul(builder, acc, r)
    return fty, xc, nf, p


def _pow2(builder, n_int, bits):
    """2**n as a float, for an integer n in the normal exponent range (bit manipulation, no libm)."""
    mant, bias, iw, *_ = _PARAMS[bits]
    ity = ir.IntType(iw)
    fty = ir.FloatType() if bits == 32 else ir.DoubleType()
    e = builder.add(n_int, ir.Constant(ity, bias))
    return builder.bitcast(builder.shl(e, ir.Constant(ity, mant)), fty)


def _exp_from(builder, fty, nf, p, bits):
    iw = _PARAMS[bits][2]
    ity = ir.IntType(iw)
    n = builder.fptosi(nf, ity)
    h = builder.ashr(n, ir.Constant(ity, 1))
    s1 = _pow2(builder, h, bits)
    s2 = _pow2(builder, builder.sub(n, h), bits)
    one_p = _fadd(builder, p, _const(fty, 1.0))
    return _fmul(builder, _fmul(builder, one_p, s1), s2)


def _restore_nan(builder, x, y):
    isnan = _fcmp(builder, "uno", x, x)
    return builder.select(isnan, x, y)


def _emit_exp(builder, x, bits):
    fty, xc, nf, p = _reduce(builder, x, bits)
    return _restore_nan(builder, x, _exp_from(builder, fty, nf, p, bits))


def _emit_expm1(builder, x, bits):
    fty, xc, nf, p = _reduce(builder, x, bits)
    ity = ir.IntType(_PARAMS[bits][2])
    n = builder.fptosi(nf, ity)
    lim = ir.Constant(ity, _EXPM1_NLIM)
    nlim = ir.Constant(ity, -_EXPM1_NLIM)
    nc = builder.select(builder.icmp_signed(">", n, nlim), n, nlim)
    nc = builder.select(builder.icmp_signed("<", nc, lim), nc, lim)
    s = _pow2(builder, nc, bits)
    # expm1 = 2**n * (1 + p) - 1 = 2**n * p + (2**n - 1): exact for n == 0, no cancellation elsewhere.
    small = _fadd(builder, _fmul(builder, s, p), _fsub(builder, s, _const(fty, 1.0)))
    big = _exp_from(builder, fty, nf, p, bits)
    y = builder.select(builder.icmp_signed(">", n, lim), big, small)
    return _restore_nan(builder, x, y)


def _emit_tanh(builder, x, bits):
    fty = ir.FloatType() if bits == 32 else ir.DoubleType()
    ax = _call_intr(builder, "llvm.fabs", fty, x)
    e = _emit_expm1(builder, _fmul(builder, ax, _const(fty, -2.0)), bits)   # in (-1, 0]
    t = _fdiv(builder, _fsub(builder, _const(fty, 0.0), e), _fadd(builder, e, _const(fty, 2.0)))
    return _call_intr(builder, "llvm.copysign", fty, t, x)


def _make_intrinsic(emit, name):
    def typer(typingctx, x):
        if not isinstance(x, types.Float) or x.bitwidth not in (32, 64):
            return None
        sig = x(x)

        def codegen(context, builder, signature, args):
            return emit(builder, args[0], x.bitwidth)

        return sig, codegen

    typer.__name__ = name
    typer.__qualname__ = name
    return intrinsic(typer)


fast_exp = _make_intrinsic(_emit_exp, "fast_exp")
fast_exp.__doc__ = "exp(x) for a float32/float64 scalar inside @njit code; vectorises in loops."
fast_expm1 = _make_intrinsic(_emit_expm1, "fast_expm1")
fast_expm1.__doc__ = "exp(x) - 1, accurate for small |x|, inside @njit code; vectorises in loops."
fast_tanh = _make_intrinsic(_emit_tanh, "fast_tanh")
fast_tanh.__doc__ = "tanh(x) inside @njit code, from expm1; vectorises in loops."


# ---- array versions (for tests and for callers outside Numba) --------------------------------------

@numba.njit(fastmath=FASTMATH, cache=True)
def _exp_flat(x, y):
    for i in range(x.size):
        y[i] = fast_exp(x[i])


@numba.njit(fastmath=FASTMATH, cache=True)
def _expm1_flat(x, y):
    for i in range(x.size):
        y[i] = fast_expm1(x[i])


@numba.njit(fastmath=FASTMATH, cache=True)
def _tanh_flat(x, y):
    for i in range(x.size):
        y[i] = fast_tanh(x[i])


def _apply(kernel, x):
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    xc = np.ascontiguousarray(x)
    y = np.empty_like(xc)
    kernel(xc.reshape(-1), y.reshape(-1))
    return y


def exp(x):
    """Element-wise exp of a float32/float64 array with the vectorised kernel (same dtype out)."""
    return _apply(_exp_flat, x)


def expm1(x):
    """Element-wise exp(x) - 1 of a float32/float64 array with the vectorised kernel."""
    return _apply(_expm1_flat, x)


def tanh(x):
    """Element-wise tanh of a float32/float64 array with the vectorised kernel."""
    return _apply(_tanh_flat, x)


# ---- compiling kernels once per dtype ----------------------------------------------------------------

def array_type(ftype, ndim, readonly=False, layout="C"):
    """Numba array type for kernel signatures. ``layout="C"`` for arrays the wrapper makes contiguous
    (loops over them vectorise); ``"A"`` for strided views (any layout; the kernel copies tiles out of
    them). ``readonly=True`` for inputs, which then accept read-only arrays too (memory maps, broadcasts).
    """
    return types.Array(ftype, ndim, layout, readonly=readonly)


def renamed_copy(f, suffix: str):
    """The Python function ``f`` under the name ``f.__name__ + suffix``. Numba names its on-disk cache files
    after the function, so two builds of one function (serial and parallel) need two names."""
    clone = pytypes.FunctionType(f.__code__, f.__globals__, f.__name__ + suffix, f.__defaults__, f.__closure__)
    clone.__qualname__ = f.__qualname__ + suffix
    return clone


SMALL_WORK = 16384  # below this many elements a kernel runs on one thread (see LazyKernel.pick)
# Row blocks of the kernels' column sums (layer norm's dgamma/dbeta, bias gradients): each block sums into
# a private row of partial sums, added in a fixed order -- fixed, so results do not depend on the thread count.
SUM_BLOCKS = 32


class LazyKernel:
    """A Numba kernel compiled on first use, exactly once per float dtype.

    ``LazyKernel(pyfunc, argtypes)`` where ``argtypes(ftype)`` gives the argument types for the Numba
    float type ``ftype``; ``kernel[dtype](*args)`` runs it. One explicit signature per dtype means
    C-contiguous arrays and strided views passed where the signature says ``"A"`` share one compiled
    version, instead of one compilation for every combination of layouts (and writeable flags) met at
    run time -- that keeps first-use compilation, and the test suite, short.

    ``parallel=True`` compiles the float32 version with ``parallel=True`` (``prange`` loops run on all
    threads). The float64 version, which exists for gradient checks on small arrays, is compiled
    serially (``prange`` acts as ``range``): Numba's parallel pipeline would double or triple its
    compilation time for no benefit at those sizes. ``parallel="all"`` makes both dtypes parallel.
    """

    def __init__(self, pyfunc, argtypes, parallel=True, fastmath=None):
        self.pyfunc = pyfunc
        self.argtypes = argtypes
        self.parallel = parallel
        self.fastmath = FASTMATH if fastmath is None else fastmath
        self._compiled = {}
        self._serial = {}

    def pick(self, dtype, work: int):
        """The kernel for ``dtype``, serial when ``work`` (elements to process) is below
        ``SMALL_WORK``: starting the thread pool costs ~0.1 ms, far more than one row of a layer norm
        or the GELU of one generated token."""
        return self.serial(dtype) if work < SMALL_WORK else self[dtype]

    def serial(self, dtype):
        """A single-threaded build of the kernel for ``dtype`` (compiled on first use)."""
        dtype = np.dtype(dtype)
        fn = self._serial.get(dtype)
        if fn is None:
            runtime.ensure()  # before anything compiles or starts a thread pool (minigpt/runtime.py)
            if not (self.parallel == "all" or (self.parallel is True and dtype == np.float32)):
                fn = self[dtype]  # that build is serial already
            else:
                sig = tuple(self.argtypes(numba.from_dtype(dtype)))
                fn = numba.njit(sig, parallel=False, fastmath=self.fastmath, cache=True)(
                    renamed_copy(self.pyfunc, "_serial"))
            self._serial[dtype] = fn
        return fn

    def __getitem__(self, dtype):
        dtype = np.dtype(dtype)
        fn = self._compiled.get(dtype)
        if fn is None:
            runtime.ensure()  # before anything compiles or starts a thread pool (minigpt/runtime.py)
            if dtype not in (np.float32, np.float64):
                raise MiniGPTError(f"{self.pyfunc.__name__.strip('_')}: the kernels work on float32 and float64 "
                                   f"arrays, got {dtype}")
            ftype = numba.from_dtype(dtype)
            sig = tuple(self.argtypes(ftype))
            parallel = self.parallel == "all" or (self.parallel is True and dtype == np.float32)
            fn = numba.njit(sig, parallel=parallel, fastmath=self.fastmath, cache=True)(self.pyfunc)
            self._compiled[dtype] = fn
        return fn


@numba.njit(inline="always")
def row_max(x, n):
    """max(x[:n]) for n >= 1, with eight independent running maxima so the loop vectorises (a single
    running ``max`` is a serial chain of compares that LLVM keeps scalar). NaNs are skipped: a NaN in a
    softmax row still turns the row into NaN through ``exp(x - max)``."""
    m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = x[0]
    nb = n // 8 * 8
    for j in range(0, nb, 8):
        v = x[j]
        m0 = v if v > m0 else m0
        v = x[j + 1]
        m1 = v if v > m1 else m1
        v = x[j + 2]
        m2 = v if v > m2 else m2
        v = x[j + 3]
        m3 = v if v > m3 else m3
        v = x[j + 4]
        m4 = v if v > m4 else m4
        v = x[j + 5]
        m5 = v if v > m5 else m5
        v = x[j + 6]
        m6 = v if v > m6 else m6
        v = x[j + 7]
        m7 = v if v > m7 else m7
    m0 = m1 if m1 > m0 else m0
    m2 = m3 if m3 > m2 else m2
    m4 = m5 if m5 > m4 else m4
    m6 = m7 if m7 > m6 else m6
    m0 = m2 if m2 > m0 else m0
    m4 = m6 if m6 > m4 else m4
    m0 = m4 if m4 > m0 else m0
    for j in range(nb, n):
        v = x[j]
        m0 = v if v > m0 else m0
    return m0
