"""minigpt's thread-pool defaults (minigpt/_threads.py), checked in fresh interpreters."""
import json
import os
import subprocess
import sys

import pytest

PROBE = r"""
import json, os
import minigpt, minigpt._threads as T
import numba, numpy as np
@numba.njit(parallel=True)
def f(a):
    for i in numba.prange(a.size):
        a[i] += 1.0
a = np.zeros(64)
f(a)
print(json.dumps({"chosen": T.LAYER, "layer": numba.threading_layer(), "spin": os.environ.get("GOMP_SPINCOUNT"),
                  "env_layer": os.environ.get("NUMBA_THREADING_LAYER"), "ok": bool((a == 1).all())}))
"""


def run_probe(**env):
    full = {k: v for k, v in os.environ.items()
            if k not in ("NUMBA_THREADING_LAYER", "GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    full.update(env)
    out = subprocess.run([sys.executable, "-c", PROBE], env=full, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the OpenMP layer is chosen on Linux only")
def test_default_layer_is_openmp_or_workqueue_and_spin_is_not_left_in_the_environment():
    r = run_probe()
    assert r["ok"]
    assert r["chosen"] in ("omp", "workqueue")
    assert r["layer"] == r["chosen"] == r["env_layer"]
    assert r["spin"] is None  # set only while libgomp loaded: later libraries keep their defaults


def test_a_layer_chosen_by_the_user_wins():
    r = run_probe(NUMBA_THREADING_LAYER="workqueue")
    assert r["ok"] and r["layer"] == "workqueue"


def test_a_spin_chosen_by_the_user_is_kept():
    r = run_probe(GOMP_SPINCOUNT="123")
    assert r["ok"] and r["spin"] == "123"
