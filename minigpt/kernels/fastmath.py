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
from decimal import Decimal, getcontext

import minigpt._threads  # noqa: F401  (before numba: selects the workqueue threading layer)
import numba
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

# Fast-math flags for the kernels of this package: everything that helps vectorise except ``nnan`` and
# ``ninf`` (masks, -inf logits and +-1e4 logits must keep IEEE behaviour).
FASTMATH = frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})


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
    fn = builder.module.declare_intrinsic(name, [fty])
    return builder.call(fn, list(args))


def _reduce(builder, x, bits):
    """Emit the shared part: clamp, n = rint(x/ln2) (as float), r, and p = expm1(r) (a polynomial)."""
    fty = ir.FloatType() if bits == 32 else ir.DoubleType()
    _, _, _, lo, hi, ln2_hi, ln2_lo, degree = _PARAMS[bits]
    c = lambda v: _const(fty, v)  # noqa: E731
    # clamp with ordered compares: a NaN input becomes `lo` here and is restored at the very end.
    xc = builder.select(builder.fcmp_ordered(">", x, c(lo)), x, c(lo))
    xc = builder.select(builder.fcmp_ordered("<", xc, c(hi)), xc, c(hi))
    nf = _call_intr(builder, "llvm.rint", fty, builder.fmul(xc, c(1.0 / math.log(2.0))))
    r = builder.fsub(xc, builder.fmul(nf, c(ln2_hi)))
    r = builder.fsub(r, builder.fmul(nf, c(ln2_lo)))
    # expm1(r) = r * (1 + r/2 * (1 + r/3 * (1 + ... ))) -- Taylor, Horner form with 1/k! coefficients.
    coeffs = [1.0 / math.factorial(k) for k in range(1, degree + 1)]
    acc = c(coeffs[-1])
    for a in reversed(coeffs[:-1]):
        acc = builder.fadd(builder.fmul(acc, r), c(a))
    p = builder.fmul(acc, r)
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
    one_p = builder.fadd(p, _const(fty, 1.0))
    return builder.fmul(builder.fmul(one_p, s1), s2)


def _restore_nan(builder, x, y):
    isnan = builder.fcmp_unordered("uno", x, x)
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
    small = builder.fadd(builder.fmul(s, p), builder.fsub(s, _const(fty, 1.0)))
    big = _exp_from(builder, fty, nf, p, bits)
    y = builder.select(builder.icmp_signed(">", n, lim), big, small)
    return _restore_nan(builder, x, y)


def _emit_tanh(builder, x, bits):
    fty = ir.FloatType() if bits == 32 else ir.DoubleType()
    ax = _call_intr(builder, "llvm.fabs", fty, x)
    e = _emit_expm1(builder, builder.fmul(ax, _const(fty, -2.0)), bits)   # in (-1, 0]
    t = builder.fdiv(builder.fsub(_const(fty, 0.0), e), builder.fadd(e, _const(fty, 2.0)))
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

@numba.njit(parallel=True, fastmath=FASTMATH, cache=True)
def _exp_flat(x, y):
    for i in numba.prange(x.size):
        y[i] = fast_exp(x[i])


@numba.njit(parallel=True, fastmath=FASTMATH, cache=True)
def _expm1_flat(x, y):
    for i in numba.prange(x.size):
        y[i] = fast_expm1(x[i])


@numba.njit(parallel=True, fastmath=FASTMATH, cache=True)
def _tanh_flat(x, y):
    for i in numba.prange(x.size):
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
