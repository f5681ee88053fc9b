"""Reading safetensors files: headers, tensors straight into arrays the caller owns, finiteness checks.

The file-format layer under the checkpoint layouts (GPT-2's in ``checkpoint.py``, Llama's and Qwen 3's in
``hf_llama.py``); it knows nothing of either.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file

from ..errors import MiniGPTError

SCALE_SUFFIX = "_scale"  # an int8 weight's float32 scales are stored as "<weight name>_scale"


_FLOAT_DTYPES = {"F16", "F32", "F64"}


def _read_header(path: Path) -> dict:
    """``{name: (shape, dtype)}`` of a safetensors file, from its header alone (no tensor is read)."""
    try:
        with safe_open(str(path), "np") as f:
            return {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, TypeError, RuntimeError) as e:
        raise MiniGPTError(f"cannot read {path}: {e}") from None


_NP_DTYPES = {"F16": "<f2", "F32": "<f4", "F64": "<f8"}
_MAX_HEADER = 100 << 20  # the limit safetensors itself puts on a header


class _TensorFile:
    """The tensors of a safetensors file read straight into arrays the caller owns (``readinto`` at each
    tensor's offset): no mapping of the file (whose touched pages would count as the process's memory beside
    the arrays), no copy of a tensor when its dtype is the array's. ``header`` is ``_read_header``'s (already
    checked by safetensors); the data offsets come from the file's JSON header, checked again here against the
    shapes, dtypes and the file's size."""

    def __init__(self, path: Path, header: dict):
        self.path, self.header = path, header
        try:
            self.f = open(path, "rb", buffering=0)
            size = self.f.seek(0, 2)
            self.f.seek(0)
            n = int.from_bytes(self._read_exact(8), "little")
            if n > min(_MAX_HEADER, size - 8):
                raise ValueError(f"header of {n} bytes in a file of {size}")
            raw = json.loads(self._read_exact(n))
        except (OSError, ValueError, UnicodeDecodeError) as e:
            self.close()
            raise MiniGPTError(f"cannot read {path}: {e}") from None
        self.start, self.offsets = 8 + n, {}
        for name, (shape, dtype) in header.items():
            entry = raw.get(name) if isinstance(raw, dict) else None
            offs = entry.get("data_offsets") if isinstance(entry, dict) else None
            nbytes = math.prod(shape) * np.dtype(_NP_DTYPES.get(dtype, "<u2" if dtype == "BF16" else "u1")).itemsize
            if (not isinstance(offs, list) or len(offs) != 2 or not all(isinstance(o, int) for o in offs)
                    or offs[1] - offs[0] != nbytes or offs[0] < 0 or self.start + offs[1] > size):
                self.close()
                raise MiniGPTError(f"cannot read {path}: tensor {name} has data offsets {offs!r}, which do not "
                                   f"hold its {nbytes} bytes inside the file")
            self.offsets[name] = offs[0]

    def _read_exact(self, n: int, out=None):
        buf = bytearray(n) if out is None else out
        view, got = memoryview(buf).cast("B"), 0
        while got < n:
            k = self.f.readinto(view[got:])
            if not k:
                raise ValueError(f"the file ends {n - got} bytes early (truncated?)")
            got += k
        return buf

    def read(self, name: str, out: np.ndarray | None = None, lo: int = 0, hi: int | None = None) -> np.ndarray:
        """Tensor ``name`` (elements ``lo:hi`` of it, flat, when given) read into ``out`` (cast to its dtype;
        without ``out``, a new array of the file's dtype)."""
        shape, dtype = self.header[name]
        src = np.dtype(_NP_DTYPES[dtype])
        count = math.prod(shape)
        hi = count if hi is None else hi
        direct = out is not None and out.dtype == src and out.flags.c_contiguous
        buf = out if direct else np.empty(hi - lo, dtype=src)
        if hi > lo:
            try:
                self.f.seek(self.start + self.offsets[name] + lo * src.itemsize)
                self._read_exact((hi - lo) * src.itemsize, buf.reshape(-1).view(np.uint8))
            except (OSError, ValueError) as e:
                raise MiniGPTError(f"cannot read tensor {name} of {self.path}: {e}") from None
        if out is None:
            return buf if (lo, hi) != (0, count) else buf.reshape(shape)
        if not direct:
            np.copyto(out, buf.reshape(out.shape), casting="unsafe")
        return out

    def read_bits(self, name: str) -> np.ndarray:
        """The raw 16-bit words of a bfloat16 tensor ``name`` (flat uint16; NumPy has no bfloat16)."""
        count = math.prod(self.header[name][0])
        buf = np.empty(count, dtype="<u2")
        try:
            self.f.seek(self.start + self.offsets[name])
            self._read_exact(2 * count, buf.view(np.uint8))
        except (OSError, ValueError) as e:
            raise MiniGPTError(f"cannot read tensor {name} of {self.path}: {e}") from None
        return buf

    def equal(self, a: str, b: str, chunk: int = 1 << 22) -> bool:
        """Whether tensors ``a`` and ``b`` hold the same values, compared a chunk at a time."""
        n = math.prod(self.header[a][0])
        if self.header[a][0] != self.header[b][0]:
            return False
        return all(np.array_equal(self.read(a, lo=i, hi=min(n, i + chunk)), self.read(b, lo=i, hi=min(n, i + chunk)))
                   for i in range(0, n, chunk))

    def close(self) -> None:
        f = getattr(self, "f", None)
        if f is not None:
            f.close()


def _read_safetensors(path: Path) -> dict:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, TypeError, RuntimeError) as e:
        raise MiniGPTError(f"cannot read {path}: {e}") from None


def check_finite(arrays: dict, path) -> None:
    """Refuse arrays holding NaN or infinity (a damaged or diverged file), naming the first such tensor."""
    for name, arr in arrays.items():
        if arr.dtype.kind == "f" and not np.isfinite(arr.sum(dtype=arr.dtype)):  # fast path: a finite sum
            if not np.isfinite(arr).all():  # the sum may overflow for large finite values
                raise MiniGPTError(f"{path}: tensor {name} holds NaN or infinity (a damaged or diverged file)")




def fill_model(reader, model, extra: dict | None = None) -> None:
    """Read every tensor of ``reader`` (``names``, ``shape(name)``, ``read(name, out)``) into ``model``'s own
    parameter arrays (``extra``: more arrays by name, e.g. a classifier's head); names and shapes are checked as
    ``Module.load_state_dict`` checks them, before anything is read."""
    own = dict(model.named_parameters())
    extra = extra or {}
    missing = [n for n in own if n not in reader.names and n not in extra]
    unexpected = [n for n in (*reader.names, *extra) if n not in own]
    if missing or unexpected:
        parts = [f"{what} {len(ns)}: {', '.join(ns[:8])}{' ...' if len(ns) > 8 else ''}"
                 for what, ns in (("missing", missing), ("unexpected", unexpected)) if ns]
        raise MiniGPTError(f"load_state_dict into {type(model).__name__}: " + "; ".join(parts))
    shape = lambda n: reader.shape(n) if n in reader.names else tuple(np.shape(extra[n]))  # noqa: E731
    bad = [f"{n}: checkpoint {shape(n)} vs model {p.shape}" for n, p in own.items() if shape(n) != p.shape]
    if bad:
        raise MiniGPTError("load_state_dict: shape mismatch for " + "; ".join(bad[:8]))
    for n, p in own.items():
        if n in reader.names:
            reader.read(n, p.data)
        else:
            np.copyto(p.data, np.asarray(extra[n]), casting="unsafe")
