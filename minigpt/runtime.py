"""The tuned runtime: thread pools and allocator, applied at minigpt's first numerical work, never at import.

``import minigpt`` leaves the process alone. The first time a minigpt kernel runs (the first layer norm,
GELU, attention, optimizer step... of a script, a notebook or the ``minigpt`` command), :func:`ensure` applies
the settings below, before Numba's thread pool starts. A program can also call :func:`configure` itself,
earlier (the ``minigpt`` command does, before NumPy loads)::

    >>> import minigpt.runtime
    >>> minigpt.runtime.configure()          # doctest: +SKIP
    >>> minigpt.runtime.describe()["threading_layer"]   # doctest: +SKIP
    'omp'

Opting out: ``MINIGPT_RUNTIME=0`` in the environment, or :func:`disable` before the first kernel runs, keeps
the untouched process (nothing below is applied, not even by ``configure()``). Every result is the same
either way (same numbers, bit for bit); only the speed differs.

What is set, and why (measured on the project's 2-core machines, see benchmarks/README.md):

- **Numba's OpenMP threading layer with a short spin.** Starting a parallel region costs ~150 us with
  Numba's ``workqueue`` layer (its workers sleep and must be woken), ~2 us with OpenMP while its threads
  still spin. Threads that spin for long (GNU OpenMP's default) steal the cores from the next GEMM, so the
  spin is short (``GOMP_SPINCOUNT=3000``): a tiny model's step was ~20% faster than with ``workqueue``.
  GNU OpenMP reads the spin once, when it is loaded, so Numba's OpenMP pool (and the system's libgomp) is
  loaded here with ``GOMP_SPINCOUNT`` set, and the variable is removed again. ``RTLD_DEEPBIND`` keeps the
  pool's OpenMP calls on that libgomp even if another one (PyTorch's) is already loaded. ``workqueue`` is
  the fallback off Linux, when the pool cannot be loaded, or when a libgomp is already loaded.
- **OpenBLAS's short spin** (``OPENBLAS_THREAD_TIMEOUT=4``): after a GEMM, OpenBLAS's worker threads
  otherwise keep spinning for ~0.1 s and take the cores from the Numba kernel that follows. OpenBLAS reads
  the variable when NumPy loads it. If NumPy is loaded already (it always is by the first kernel launch),
  the setting is applied through OpenBLAS's own C functions: the environment is re-read with the variable
  set (``openblas_read_env``), the variable is removed again, and the worker threads are stopped
  (``blas_thread_shutdown_``); OpenBLAS starts them again at the next GEMM, with the short spin. So the
  import order does not matter. Where those functions are missing (another BLAS build),
  :func:`describe` says the setting is not in force.
- **glibc malloc keeps large freed blocks** (``mallopt``: mmap threshold 32 MiB, trim threshold 1 GiB): a
  training step reuses the previous step's activations instead of faulting fresh pages in, ~5-8%.
  ``MINIGPT_MALLOC_TUNING=0`` leaves malloc alone.
- **Thread counts:** Numba's and OpenBLAS's pools keep one thread per core; they take turns (a kernel, then
  a GEMM), never run at the same time, so they do not oversubscribe. ``configure(threads=N)`` sets both.
  Under an MPI launcher that started several ranks on this machine, each rank's pools get cores / ranks
  threads (:func:`threads_per_rank`).

Every setting is a default: a value already in the environment wins (``NUMBA_THREADING_LAYER``,
``GOMP_SPINCOUNT`` / ``OMP_WAIT_POLICY``, ``OPENBLAS_THREAD_TIMEOUT``, ``OPENBLAS_NUM_THREADS``,
``NUMBA_NUM_THREADS``). ``configure()`` is idempotent. Called after Numba's thread pool has started (the
program ran its own parallel Numba code first), it cannot change the threading layer any more: it warns
(``RuntimeWarning``; the automatic call only records it in :func:`describe`'s notes) and applies the rest.

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

from .errors import MiniGPTError

SPINCOUNT = "3000"
OPENBLAS_THREAD_TIMEOUT = "4"
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

_state = {"configured": False, "threading_layer": None, "omp_pool_loaded": False, "malloc_tuned": False,
          "openblas_thread_timeout": None, "notes": [], "disabled": None, "applied_by": None, "pid": None}
# True once ensure() has nothing left to do (settings applied, or opted out): the kernels' one-flag check
ready = False


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
    if "numba" in sys.modules:  # Numba has read its settings already: tell it directly (environment untouched)
        import numba

        numba.config.THREADING_LAYER = layer
    else:
        os.environ["NUMBA_THREADING_LAYER"] = layer


def _choose_threading_layer(notes: list, warn: bool) -> str | None:
    if "NUMBA_THREADING_LAYER" in os.environ:
        return os.environ["NUMBA_THREADING_LAYER"]
    numba = sys.modules.get("numba")
    if numba is not None and getattr(numba.config, "THREADING_LAYER", "default") != "default":
        return numba.config.THREADING_LAYER  # chosen by the program through numba.config
    if _numba_pool_started():
        import numba

        layer = numba.threading_layer()
        msg = (f"Numba's thread pool started (layer {layer!r}, its own spin) before minigpt's runtime was applied: "
               "the threading layer cannot change now. Measured cost: the tiny training step ~2.1x slower than "
               "tuned (loaded machine, benchmarks/README.md); apply it first (minigpt.runtime.configure() "
               "before the program's own parallel Numba code)")
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


def _openblas_set_timeout_late(value: str) -> bool:
    """Give an OpenBLAS that is loaded already the short spin; True when in force (read back from OpenBLAS).

    OpenBLAS keeps the variable in a private setting read from the environment when it loads. Its exported
    ``openblas_read_env`` reads the environment again (with the variable set here for that moment only),
    and ``blas_thread_shutdown_`` stops its worker threads, which OpenBLAS starts again at the next GEMM
    with the new spin. Numerical results are unaffected."""
    path = _openblas_path()
    if path is None:
        return False
    try:
        lib = ctypes.CDLL(path)
        read_env, get_timeout = lib.openblas_read_env, lib.openblas_thread_timeout
        shutdown = lib.blas_thread_shutdown_
    except (OSError, AttributeError):
        return False
    get_timeout.restype = ctypes.c_int
    os.environ["OPENBLAS_THREAD_TIMEOUT"] = value
    try:
        read_env()
    finally:
        del os.environ["OPENBLAS_THREAD_TIMEOUT"]
    if get_timeout() != int(value):
        return False
    shutdown()
    return True


def _openblas_timeout_in_force():
    """The thread timeout OpenBLAS reports (None when it cannot say)."""
    path = _openblas_path()
    if path is None:
        return None
    try:
        fn = ctypes.CDLL(path).openblas_thread_timeout
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_int
    return fn() or None


def _env_disabled():
    """True if ``MINIGPT_RUNTIME`` asks for the untouched process; a clear error for a value it cannot mean."""
    v = os.environ.get("MINIGPT_RUNTIME", "").strip().lower()
    if v in ("", "1", "on", "yes", "true"):
        return False
    if v in ("0", "off", "no", "false"):
        return True
    raise MiniGPTError(f"environment variable MINIGPT_RUNTIME={os.environ['MINIGPT_RUNTIME']!r} is not understood; "
                       "use 0 (leave the process untouched) or 1 (the tuned runtime, the default)")


def disable() -> dict:
    """Keep this process untouched: minigpt applies none of its runtime settings (same as
    ``MINIGPT_RUNTIME=0``). Call it before minigpt's first numerical work; after the settings are in force it
    raises :class:`~minigpt.errors.MiniGPTError` (thread pools that started cannot be taken back).
    Returns :func:`describe`'s dict."""
    global ready
    if _state["configured"]:
        raise MiniGPTError("minigpt.runtime.disable(): the tuned runtime is already in force (applied by "
                           f"{_state['applied_by']}); call disable() before minigpt's first numerical work, "
                           "or set MINIGPT_RUNTIME=0 in the environment")
    _state["disabled"] = "minigpt.runtime.disable()"
    ready = True
    return describe()


def ensure() -> None:
    """Apply the tuned runtime unless it is in force or opted out; called by every kernel launch until it
    has run once (the check is one flag). Never warns: what could not be applied goes to
    :func:`describe`'s notes."""
    if not ready:
        configure(warn=False, _by="the first kernel launch")


def configure(threads: int | None = None, warn: bool = True, _by: str = "configure()") -> dict:
    """Apply the tuned runtime (see the module docstring). Idempotent; returns :func:`describe`'s dict.

    ``threads``: size of both the Numba and the OpenBLAS pool (default: one per core, as they start).
    ``warn=False``: when called too late for the threading layer, only record it in ``describe()["notes"]``
    instead of warning (the Trainer does this: it is a convenience call, not the program's own).
    """
    global ready
    if _state["configured"]:
        if threads is not None:
            _set_threads(threads, _state["notes"])
        return describe()
    if _state["disabled"] is None and _env_disabled():
        _state["disabled"] = "MINIGPT_RUNTIME=0"
    if _state["disabled"]:
        ready = True
        return describe()
    notes = _state["notes"]
    # OpenBLAS reads its spin when NumPy loads it: before that, through the environment; after, through
    # its C functions (see the module docstring).
    if "OPENBLAS_THREAD_TIMEOUT" not in os.environ:
        if _openblas_path() is not None:
            if _openblas_set_timeout_late(OPENBLAS_THREAD_TIMEOUT):
                _state["openblas_thread_timeout"] = OPENBLAS_THREAD_TIMEOUT
            else:
                notes.append("NumPy's OpenBLAS was loaded first and offers no way to change its spin now: "
                             f"OPENBLAS_THREAD_TIMEOUT={OPENBLAS_THREAD_TIMEOUT} not in force. Measured cost: the "
                             "tiny training step ~1.4x slower (loaded machine, benchmarks/README.md); set it in the "
                             "environment "
                             "before Python starts, or call minigpt.runtime.configure() before importing NumPy")
        elif "numpy" in sys.modules:
            notes.append("NumPy's BLAS is not OpenBLAS (or was not found): OPENBLAS_THREAD_TIMEOUT not applied")
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
    if "torch" in sys.modules:
        notes.append("PyTorch is loaded: it keeps its own OpenMP pool and settings (minigpt's kernels use "
                     "Numba's pool, loaded separately); measured: the training step with NumPy and PyTorch imported "
                     "first ran 0.98-0.99x the tuned time, tiny and small (benchmarks/README.md)")
    _state.update(configured=True, applied_by=_by, pid=os.getpid())
    ready = True
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


def summary(d: dict | None = None) -> str:
    """One line saying which runtime the process runs (for reports such as the profiler's table)."""
    d = describe() if d is None else d
    if d["disabled_by"]:
        head = (f"runtime: untuned ({d['disabled_by']}): the untouched process, slower than minigpt's default; "
                "times here are not the ones minigpt users get")
    elif not d["configured"]:
        head = "runtime: not applied yet (no minigpt kernel has run)"
    else:
        head = (f"runtime: tuned (applied by {d['applied_by']}): Numba layer {d['threading_layer']}, "
                f"{d['numba_threads']} threads, OpenBLAS spin timeout {d['openblas_thread_timeout'] or 'default'}")
    return head + "".join(f"; note: {n}" for n in d["notes"])


def describe(print_it: bool = False) -> dict:
    """What is in force: whether the tuned runtime was applied (``configured``, ``applied_by``) or opted out
    (``disabled_by``), threads, threading layer, spins, BLAS and its kernel, versions, and ``notes`` on what
    could not be applied.

    Reads only; imports nothing new and starts no thread pool. ``print_it=True`` also prints it.
    """
    numba = sys.modules.get("numba")
    numpy = sys.modules.get("numpy")
    if _numba_pool_started():
        layer, threads = numba.threading_layer(), numba.get_num_threads()
    else:
        layer = os.environ.get("NUMBA_THREADING_LAYER") or (numba.config.THREADING_LAYER if numba else None)
        threads = numba.config.NUMBA_NUM_THREADS if numba else None
    notes = list(_state["notes"])
    if _state["pid"] is not None and _state["pid"] != os.getpid():
        notes.append(f"this process is a forked child of process {_state['pid']}, where the runtime was applied"
                     + (": GNU OpenMP is not fork-safe, parallel kernels here may fail; use the 'spawn' start "
                        "method or set NUMBA_THREADING_LAYER=workqueue" if _state["omp_pool_loaded"] else ""))
    timeout = _state["openblas_thread_timeout"] or os.environ.get("OPENBLAS_THREAD_TIMEOUT")
    in_force = _openblas_timeout_in_force()
    if in_force is not None:
        timeout = str(in_force)
    d = {
        "configured": _state["configured"],
        "applied_by": _state["applied_by"],
        "disabled_by": _state["disabled"],
        "threading_layer": layer,
        "numba_pool_started": _numba_pool_started(),
        "numba_threads": threads,
        "gomp_spincount": SPINCOUNT if _state["omp_pool_loaded"] else os.environ.get("GOMP_SPINCOUNT"),
        "libgomp_loaded": libgomp_loaded(),
        "openblas_thread_timeout": timeout,
        "malloc_tuned": _state["malloc_tuned"],
        "blas": _blas_info(),
        "numpy": getattr(numpy, "__version__", None),
        "numba": getattr(numba, "__version__", None),
        "cpus": os.cpu_count(),
        "notes": notes,
    }
    if print_it:
        for k, v in d.items():
            print(f"{k:24s} {v}")
    return d
