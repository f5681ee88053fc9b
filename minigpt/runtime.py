"""The tuned runtime: thread pools and allocator, applied by one explicit call, never at import.

``import minigpt`` leaves the process alone. A program that wants minigpt's measured speed calls
:func:`configure` once, as early as it can (the ``minigpt`` command, the Trainer and the benchmarks do)::

    >>> import minigpt.runtime
    >>> minigpt.runtime.configure()          # doctest: +SKIP
    >>> minigpt.runtime.describe()["threading_layer"]   # doctest: +SKIP
    'omp'

Without it every result is the same (same numbers, bit for bit); only the tuned speed is missing.

What ``configure()`` sets, and why (measured on the project's 2-core machines, see benchmarks/README.md):

- **Numba's OpenMP threading layer with a short spin.** Starting a parallel region costs ~150 us with
  Numba's ``workqueue`` layer (its workers sleep and must be woken), ~2 us with OpenMP while its threads
  still spin. Threads that spin for long (GNU OpenMP's default) steal the cores from the next GEMM, so the
  spin is short (``GOMP_SPINCOUNT=3000``): a tiny model's step was ~20% faster than with ``workqueue``.
  GNU OpenMP reads the spin once, when it is loaded, so Numba's OpenMP pool (and the system's libgomp) is
  loaded here with ``GOMP_SPINCOUNT`` set, and the variable is removed again. ``RTLD_DEEPBIND`` keeps the
  pool's OpenMP calls on that libgomp even if another one (PyTorch's) is already loaded. ``workqueue`` is
  the fallback off Linux, when the pool cannot be loaded, or when a libgomp is already loaded.
- **OpenBLAS's short spin** (``OPENBLAS_THREAD_TIMEOUT=4``): 1-12% faster steps. OpenBLAS reads it when
  NumPy loads it, so it only takes effect if ``configure()`` runs before NumPy is imported (the ``minigpt``
  command does); otherwise :func:`describe` says it is not in force.
- **glibc malloc keeps large freed blocks** (``mallopt``: mmap threshold 32 MiB, trim threshold 1 GiB): a
  training step reuses the previous step's activations instead of faulting fresh pages in, ~5-8%.
  ``MINIGPT_MALLOC_TUNING=0`` leaves malloc alone.
- **Thread counts:** Numba's and OpenBLAS's pools keep one thread per core; they take turns (a kernel, then
  a GEMM), never run at the same time, so they do not oversubscribe. ``configure(threads=N)`` sets both.
  Under an MPI launcher that started several ranks on this machine, each rank's pools get cores / ranks
  threads (:func:`threads_per_rank`).

Every setting is a default: a value already in the environment wins (``NUMBA_THREADING_LAYER``,
``GOMP_SPINCOUNT`` / ``OMP_WAIT_POLICY``, ``OPENBLAS_THREAD_TIMEOUT``, ``OPENBLAS_NUM_THREADS``,
``NUMBA_NUM_THREADS``). ``configure()`` is idempotent. Called after Numba's thread pool has started, it
cannot change the threading layer any more: it warns (``RuntimeWarning``) and applies the rest.

PyTorch: import it before calling ``configure()`` to keep its own OpenMP settings. GNU OpenMP is not
fork-safe: a process forked (without exec) after a parallel kernel ran must not run parallel kernels
itself; set ``NUMBA_THREADING_LAYER=workqueue`` if your program forks.
"""
from __future__ import annotations

import ctypes
import glob
import importlib.util
import os
import sys
import warnings

SPINCOUNT = "3000"
OPENBLAS_THREAD_TIMEOUT = "4"
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

_state = {"configured": False, "threading_layer": None, "omp_pool_loaded": False, "malloc_tuned": False,
          "openblas_thread_timeout": None, "notes": []}


def _maps() -> str:
    try:
        with open("/proc/self/maps") as f:
            return f.read()
    except OSError:
        return ""


def libgomp_loaded() -> bool:
    """True if a GNU OpenMP runtime is mapped into this process (Linux; False elsewhere)."""
    return "libgomp" in _maps()


def _system_libgomp_loaded() -> bool:
    # The system's GNU OpenMP (the one Numba's pool links); PyTorch ships its own under another file name.
    return "/libgomp.so.1.0.0" in _maps()


def _openblas_path():
    for line in _maps().splitlines():
        parts = line.split()
        name = os.path.basename(parts[-1]).lower() if len(parts) >= 6 else ""
        if "openblas" in name and ".so" in name:
            return parts[-1]
    return None


def _omp_pool_path():
    """Path of Numba's OpenMP pool extension, found without importing Numba."""
    spec = importlib.util.find_spec("numba")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        found = glob.glob(os.path.join(root, "np", "ufunc", "omppool*.so"))
        if found:
            return found[0]
    return None


def _numba_pool_started() -> bool:
    if "numba" not in sys.modules:
        return False
    parallel = sys.modules.get("numba.np.ufunc.parallel")
    return bool(getattr(parallel, "_is_initialized", False))


def _load_omp_pool() -> bool:
    """Load Numba's OpenMP pool now, with the short spin; True on success."""
    path = _omp_pool_path()
    if path is None or not sys.platform.startswith("linux") or _system_libgomp_loaded() or not _maps():
        return False
    user_spin = "GOMP_SPINCOUNT" in os.environ or "OMP_WAIT_POLICY" in os.environ
    if not user_spin:
        os.environ["GOMP_SPINCOUNT"] = SPINCOUNT
    try:
        ctypes.CDLL(path, mode=ctypes.RTLD_LOCAL | getattr(os, "RTLD_DEEPBIND", 0))
        return True
    except OSError:
        return False
    finally:
        if not user_spin:
            del os.environ["GOMP_SPINCOUNT"]


def _set_threading_layer(layer: str) -> None:
    os.environ["NUMBA_THREADING_LAYER"] = layer
    if "numba" in sys.modules:  # Numba has read its settings already: tell it directly
        import numba

        numba.config.THREADING_LAYER = layer


def _choose_threading_layer(notes: list, warn: bool) -> str | None:
    if "NUMBA_THREADING_LAYER" in os.environ:
        return os.environ["NUMBA_THREADING_LAYER"]
    if _numba_pool_started():
        import numba

        layer = numba.threading_layer()
        msg = (f"minigpt.runtime.configure() was called after Numba's thread pool started (layer {layer!r}); "
               "the threading layer cannot change now. Call configure() before the first Numba kernel runs.")
        if warn:
            warnings.warn(msg, RuntimeWarning, stacklevel=3)
        notes.append(msg)
        return layer
    layer = "omp" if _load_omp_pool() else "workqueue"
    _state["omp_pool_loaded"] = layer == "omp"
    _set_threading_layer(layer)
    return layer


def _tune_malloc() -> bool:
    if os.environ.get("MINIGPT_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    ok = mallopt(_M_MMAP_THRESHOLD, 32 * 1024 * 1024)
    ok &= mallopt(_M_TRIM_THRESHOLD, 1024 * 1024 * 1024)
    return bool(ok)


def _set_threads(threads: int, notes: list) -> None:
    for var in ("OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS", "OMP_NUM_THREADS"):
        os.environ.setdefault(var, str(threads))
    if "numba" in sys.modules:
        import numba

        try:
            numba.set_num_threads(min(int(threads), numba.config.NUMBA_NUM_THREADS))
        except ValueError as e:  # pragma: no cover - only with odd user settings
            notes.append(f"numba threads: {e}")
    lib, prefix, suffix = _openblas_lib()
    if lib is not None:
        fn = getattr(lib, f"{prefix}openblas_set_num_threads{suffix}", None)
        if fn is not None:
            fn(ctypes.c_int(int(threads)))


# number of ranks an MPI launcher started on this machine: MPICH/Hydra, Open MPI, MVAPICH
_LOCAL_RANKS_VARS = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "MV2_COMM_WORLD_LOCAL_SIZE")


def mpi_local_ranks(environ=None) -> int:
    """How many ranks an MPI launcher started on this machine (1 outside MPI); reads the environment only.

    >>> mpi_local_ranks({"MPI_LOCALNRANKS": "2"}), mpi_local_ranks({})
    (2, 1)
    """
    env = os.environ if environ is None else environ
    for var in _LOCAL_RANKS_VARS:
        if var in env:
            try:
                return max(1, int(env[var]))
            except ValueError:
                pass
    return 1


def threads_per_rank(environ=None, cpus: int | None = None) -> int | None:
    """Under ``mpiexec -n N`` on one machine: cores // N threads per rank (N ranks with a pool of one thread
    per core each would run N x cores threads and slow every step down); None outside MPI.

    >>> threads_per_rank({"MPI_LOCALNRANKS": "2"}, cpus=8), threads_per_rank({}, cpus=8)
    (4, None)
    """
    n = mpi_local_ranks(environ)
    if n <= 1:
        return None
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cpus // n)


def configure(threads: int | None = None, warn: bool = True) -> dict:
    """Apply the tuned runtime (see the module docstring). Idempotent; returns :func:`describe`'s dict.

    ``threads``: size of both the Numba and the OpenBLAS pool (default: one per core, as they start).
    ``warn=False``: when called too late for the threading layer, only record it in ``describe()["notes"]``
    instead of warning (the Trainer does this: it is a convenience call, not the program's own).
    """
    if _state["configured"]:
        if threads is not None:
            _set_threads(threads, _state["notes"])
        return describe()
    notes = _state["notes"]
    # OpenBLAS reads its spin when NumPy loads it: set it now, and say so when it is too late.
    if "OPENBLAS_THREAD_TIMEOUT" not in os.environ:
        if _openblas_path() is not None or "numpy" in sys.modules:
            notes.append("NumPy's OpenBLAS was loaded before configure(): OPENBLAS_THREAD_TIMEOUT not in force")
        else:
            os.environ["OPENBLAS_THREAD_TIMEOUT"] = OPENBLAS_THREAD_TIMEOUT
            _state["openblas_thread_timeout"] = OPENBLAS_THREAD_TIMEOUT
    else:
        _state["openblas_thread_timeout"] = os.environ["OPENBLAS_THREAD_TIMEOUT"]
    _state["threading_layer"] = _choose_threading_layer(notes, warn)
    _state["malloc_tuned"] = _tune_malloc()
    if threads is None and not any(v in os.environ for v in ("OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS",
                                                             "OMP_NUM_THREADS")):
        threads = threads_per_rank()  # several MPI ranks on this machine share its cores
    if threads is not None:
        _set_threads(threads, notes)
    _state["configured"] = True
    return describe()


def _openblas_lib():
    """(library, symbol prefix, symbol suffix) of the OpenBLAS NumPy uses, or (None, '', '')."""
    path = _openblas_path()
    if path is None:
        return None, "", ""
    try:
        lib = ctypes.CDLL(path)
    except OSError:
        return None, "", ""
    for prefix, suffix in (("scipy_", "64_"), ("scipy_", ""), ("", "64_"), ("", "")):
        if hasattr(lib, f"{prefix}openblas_get_corename{suffix}"):
            return lib, prefix, suffix
    return None, "", ""


def _blas_info() -> dict:
    info = {}
    if "numpy" not in sys.modules:
        return {"loaded": False}
    import numpy

    try:
        deps = numpy.show_config(mode="dicts").get("Build Dependencies", {})
        blas = deps.get("blas", {})
        info.update(name=blas.get("name"), version=blas.get("version"))
    except Exception:  # show_config's layout differs across NumPy versions
        pass
    lib, prefix, suffix = _openblas_lib()
    if lib is not None:
        core = getattr(lib, f"{prefix}openblas_get_corename{suffix}")
        core.restype = ctypes.c_char_p
        config = getattr(lib, f"{prefix}openblas_get_config{suffix}")
        config.restype = ctypes.c_char_p
        info.update(kernel=core().decode(), config=config().decode(),
                    threads=int(getattr(lib, f"{prefix}openblas_get_num_threads{suffix}")()))
    return info


def describe(print_it: bool = False) -> dict:
    """What is in force: threads, threading layer, BLAS and its kernel, versions, whether configured.

    Reads only; imports nothing new and starts no thread pool. ``print_it=True`` also prints it.
    """
    numba = sys.modules.get("numba")
    numpy = sys.modules.get("numpy")
    if _numba_pool_started():
        layer, threads = numba.threading_layer(), numba.get_num_threads()
    else:
        layer = os.environ.get("NUMBA_THREADING_LAYER") or (numba.config.THREADING_LAYER if numba else None)
        threads = numba.config.NUMBA_NUM_THREADS if numba else None
    d = {
        "configured": _state["configured"],
        "threading_layer": layer,
        "numba_pool_started": _numba_pool_started(),
        "numba_threads": threads,
        "gomp_spincount": SPINCOUNT if _state["omp_pool_loaded"] else os.environ.get("GOMP_SPINCOUNT"),
        "libgomp_loaded": libgomp_loaded(),
        "openblas_thread_timeout": _state["openblas_thread_timeout"] or os.environ.get("OPENBLAS_THREAD_TIMEOUT"),
        "malloc_tuned": _state["malloc_tuned"],
        "blas": _blas_info(),
        "numpy": getattr(numpy, "__version__", None),
        "numba": getattr(numba, "__version__", None),
        "cpus": os.cpu_count(),
        "notes": list(_state["notes"]),
    }
    if print_it:
        for k, v in d.items():
            print(f"{k:24s} {v}")
    return d
