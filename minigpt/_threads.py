"""Thread-pool settings, applied before NumPy and Numba start their pools (``import minigpt`` runs this
first; a program that imported NumPy before minigpt keeps NumPy's defaults for OpenBLAS).

- Numba's default OpenMP threading layer and OpenBLAS's busy-waiting threads fight over the cores when
  they run one after the other (GEMMs fell to a third of their speed on a 2-core machine). Numba's
  ``workqueue`` layer does not disturb other libraries, so minigpt selects it unless the user chose a
  layer already.
- OpenBLAS's worker threads keep spinning for a while after each GEMM; a Numba kernel that runs right
  after one (attention after the q/k/v projection) then shares its cores with them.
  ``OPENBLAS_THREAD_TIMEOUT=4`` (the shortest spin) measured 1-12% faster training steps here.

Both pools keep their default size (the number of cores); they take turns, never run at the same time.
Every setting is a default: a value already in the environment wins.
"""
import os

os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
