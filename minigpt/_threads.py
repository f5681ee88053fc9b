"""Thread-pool settings, applied before NumPy and Numba start their pools (``import minigpt`` runs this
first; a program that imported NumPy before minigpt keeps NumPy's defaults for OpenBLAS).

Numba's parallel kernels and OpenBLAS's GEMMs take turns on the same cores, many times per training
step. What was measured on the 2-core machines of this project:

- Starting a parallel region costs ~150 us with Numba's ``workqueue`` threading layer (its workers sleep
  and must be woken each time), ~2 us with the OpenMP layer while its threads still spin, and ~30-80 us
  once they sleep. A tiny model's step runs ~60 parallel kernels, many of them shorter than that.
- OpenMP threads that keep spinning for long (GNU OpenMP's default: 300,000 spins) steal the cores from
  the next GEMM: GEMMs then run at half speed.
- A short spin (``GOMP_SPINCOUNT=3000``) gets both: kernels that follow each other start at once, and
  the threads are asleep by the time OpenBLAS needs the cores. The tiny model's training step was ~20%
  faster than with ``workqueue``; GEMM-bound steps were unchanged.

So minigpt selects Numba's ``omp`` layer with that short spin. GNU OpenMP reads ``GOMP_SPINCOUNT`` once,
when it is loaded: the value is set only while Numba's OpenMP pool (and with it the system's libgomp) is
loaded here, then the environment is restored. A library loaded later that links the same system libgomp
shares that runtime and its short spin; PyTorch brings its own libgomp but, imported after minigpt, reuses
the one already loaded (same soname) and measured ~25% slower steps: import torch *before* minigpt to
keep its defaults (the benchmarks do): each library then runs on its own OpenMP runtime. ``workqueue`` is
the fallback when the OpenMP pool cannot be loaded, when the system's libgomp was already loaded by
someone else (its spin could no longer be set), and off Linux.

``OPENBLAS_THREAD_TIMEOUT=4`` (the shortest spin of OpenBLAS's workers after a GEMM) measured 1-12%
faster training steps. Both pools keep their default size (the number of cores); they take turns, never
run at the same time. Every setting is a default: a value already in the environment wins
(``NUMBA_THREADING_LAYER``, ``GOMP_SPINCOUNT`` / ``OMP_WAIT_POLICY``, ``OPENBLAS_THREAD_TIMEOUT``).

GNU OpenMP is not fork-safe: a process forked (without exec) after minigpt ran a parallel kernel must
not run parallel kernels itself. minigpt never forks; set ``NUMBA_THREADING_LAYER=workqueue`` if your
program does.
"""
import ctypes
import glob
import importlib.util
import os
import sys

SPINCOUNT = "3000"


def _omp_pool_path():
    """Path of Numba's OpenMP pool extension, found without importing Numba (it reads its settings on
    import)."""
    spec = importlib.util.find_spec("numba")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        found = glob.glob(os.path.join(root, "np", "ufunc", "omppool*.so"))
        if found:
            return found[0]
    return None


def _libgomp_loaded():
    try:
        with open("/proc/self/maps") as f:
            return any("/libgomp.so.1.0.0" in line for line in f)
    except OSError:
        return True  # cannot tell: do not risk an OpenMP pool with the default spin


def _load_omp_pool():
    """Load Numba's OpenMP pool now, with the short spin; True on success."""
    path = _omp_pool_path()
    if path is None or _libgomp_loaded():
        return False
    user_spin = "GOMP_SPINCOUNT" in os.environ or "OMP_WAIT_POLICY" in os.environ
    if not user_spin:
        os.environ["GOMP_SPINCOUNT"] = SPINCOUNT
    try:
        # Pulls in the system's libgomp, which reads GOMP_SPINCOUNT in its constructor, now. RTLD_DEEPBIND:
        # the pool's OpenMP calls go to that libgomp even when another one is already loaded globally
        # (PyTorch's, imported before minigpt), not to a runtime with someone else's settings.
        ctypes.CDLL(path, mode=ctypes.RTLD_LOCAL | getattr(os, "RTLD_DEEPBIND", 0))
        return True
    except OSError:
        return False
    finally:
        if not user_spin:
            del os.environ["GOMP_SPINCOUNT"]


def choose_threading_layer():
    if "NUMBA_THREADING_LAYER" in os.environ:
        return os.environ["NUMBA_THREADING_LAYER"]
    if "numba" in sys.modules:  # too late to choose: Numba has read its settings
        return None
    layer = "omp" if sys.platform.startswith("linux") and _load_omp_pool() else "workqueue"
    os.environ["NUMBA_THREADING_LAYER"] = layer
    return layer


# number of ranks an MPI launcher started on this machine: MPICH/Hydra, Open MPI, MVAPICH
_LOCAL_SIZE_VARS = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "MV2_COMM_WORLD_LOCAL_SIZE")


def mpi_local_ranks(environ=None) -> int:
    """How many ranks the MPI launcher started on this machine (1 outside MPI); environment only."""
    env = os.environ if environ is None else environ
    for var in _LOCAL_SIZE_VARS:
        if var in env:
            try:
                return max(1, int(env[var]))
            except ValueError:
                pass
    return 1


def share_cores_between_ranks(environ=None, cpus=None):
    """Under ``mpiexec -n N`` on one machine, each rank's pools get cores // N threads (N ranks with the
    default pools each would run 2N threads on N cores and slow every step down). A thread count already
    in the environment wins. Returns the count set, or None."""
    env = os.environ if environ is None else environ
    n = mpi_local_ranks(env)
    if n <= 1:
        return None
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = str(max(1, cpus // n))
    for var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env.setdefault(var, threads)
    return int(threads)


THREADS_PER_RANK = share_cores_between_ranks() if "numba" not in sys.modules else None
LAYER = choose_threading_layer()
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
