"""Thread-pool settings, applied before Numba starts its pool.

Numba's default OpenMP threading layer and OpenBLAS's busy-waiting threads fight over the cores when
they run one after the other (GEMMs fell to a third of their speed on a 2-core machine). Numba's
``workqueue`` layer does not disturb other libraries, so minigpt selects it unless the user chose a
layer already. Both pools keep their default size (the number of cores); they take turns, never run
at the same time.
"""
import os

os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")
