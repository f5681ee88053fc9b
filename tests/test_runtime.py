"""``import minigpt`` changes nothing; the first kernel launch (or ``minigpt.runtime.configure()``) applies the
tuned runtime; ``MINIGPT_RUNTIME=0`` and ``minigpt.runtime.disable()`` keep the process untouched.

Each check runs in a fresh interpreter (the settings are per process and read once)."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
USER_VARS = ("NUMBA_THREADING_LAYER", "GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT", "MINIGPT_RUNTIME")
LINUX = sys.platform.startswith("linux")


def run(code, fail=False, **env):
    full = {k: v for k, v in os.environ.items() if k not in USER_VARS}
    full["PYTHONPATH"] = ROOT + os.pathsep + full.get("PYTHONPATH", "")
    full.update(env)
    out = subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True, timeout=300)
    if fail:
        assert out.returncode != 0
        return out.stderr
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


IMPORT_ALL = r"""
import json, os
def maps():
    try:
        return open("/proc/self/maps").read()
    except OSError:
        return ""
env0, maps0 = dict(os.environ), maps()
import numpy, numba, urllib.request, tqdm, regex, safetensors  # dependencies (and their libraries)
env1, libs1 = dict(os.environ), set(l.split()[-1] for l in maps().splitlines() if ".so" in l)
import minigpt
from minigpt import Tensor, GPT
import minigpt.kernels, minigpt.kernels.attention, minigpt.kernels.layernorm, minigpt.kernels.adamw
import minigpt.model, minigpt.nn, minigpt.ops, minigpt.optim, minigpt.tokenizer, minigpt.train, minigpt.cli
import minigpt.runtime
libs2 = set(l.split()[-1] for l in maps().splitlines() if ".so" in l)
print(json.dumps({"env_same": env1 == dict(os.environ) == env0,
                  "new_libs": sorted(l for l in libs2 - libs1 if not l.endswith(".cpython-311-x86_64-linux-gnu.so")
                                     and "/site-packages/" not in l and "/lib-dynload/" not in l),
                  "libgomp": "libgomp" in maps(),
                  "configured": minigpt.runtime.describe()["configured"]}))
"""


def test_import_changes_no_environment_and_loads_no_runtime():
    r = run(IMPORT_ALL)
    assert r["env_same"]
    assert not r["libgomp"]
    assert r["new_libs"] == []  # nothing beyond Python's own extension modules
    assert r["configured"] is False


def test_import_minigpt_alone_does_not_import_numpy_or_numba():
    r = run("import json, sys, minigpt; print(json.dumps({'np': 'numpy' in sys.modules, 'nb': 'numba' in sys.modules}))")
    assert r == {"np": False, "nb": False}


PROBE = r"""
import json, os, sys
EARLY = {early}
if EARLY:
    import minigpt.runtime as R
    R.configure()
import minigpt
from minigpt.model import GPT, GPTConfig
import minigpt.runtime as R
if not EARLY:
    R.configure()
import numba, numpy as np
cfg = GPTConfig(vocab_size=64, context_length=16, emb_dim=16, n_layers=1, n_heads=2, drop_rate=0.0)
import minigpt.random; minigpt.random.manual_seed(0)
model = GPT(cfg)
logits = model(np.arange(8, dtype=np.int64).reshape(1, 8))
d = R.describe()
print(json.dumps({{"layer": numba.threading_layer(), "d_layer": d["threading_layer"], "configured": d["configured"],
                  "spin_env": os.environ.get("GOMP_SPINCOUNT"), "timeout": d["openblas_thread_timeout"],
                  "malloc": d["malloc_tuned"], "blas": d["blas"], "notes": d["notes"],
                  "libgomp": d["libgomp_loaded"], "sum": float(np.asarray(logits.data, np.float64).sum()),
                  "again": R.configure()["threading_layer"]}}))
"""


@pytest.mark.skipif(not LINUX, reason="the OpenMP layer and mallopt are used on Linux only")
@pytest.mark.parametrize("early", [True, False])
def test_configure_applies_the_tuned_runtime(early):
    r = run(PROBE.format(early=early))
    assert r["configured"]
    assert r["layer"] == r["d_layer"] == r["again"]
    assert r["layer"] in ("omp", "workqueue")
    assert r["spin_env"] is None  # set only while libgomp loads: later libraries keep their defaults
    assert r["malloc"] is True
    assert r["blas"].get("name")
    # before NumPy through the environment, after it through OpenBLAS's C functions: in force either way
    assert r["timeout"] == "4" and r["notes"] == []


def test_results_are_identical_with_and_without_the_runtime():
    code = PROBE.replace("R.configure()\nimport numba", "pass\nimport numba")
    plain = run(code.format(early=False).replace("\"again\": R.configure()[\"threading_layer\"]", "\"again\": 0"),
                MINIGPT_RUNTIME="0")
    tuned = run(PROBE.format(early=True))
    assert plain["configured"] is False
    assert plain["sum"] == tuned["sum"]


def test_a_layer_chosen_by_the_user_wins():
    r = run(PROBE.format(early=True), NUMBA_THREADING_LAYER="workqueue")
    assert r["layer"] == "workqueue"


def test_a_spin_chosen_by_the_user_is_kept():
    r = run(PROBE.format(early=True), GOMP_SPINCOUNT="123")
    assert r["spin_env"] == "123"


LATE = r"""
import json, warnings, numba, numpy as np
@numba.njit(parallel=True)
def f(a):
    for i in numba.prange(a.size):
        a[i] += 1.0
f(np.zeros(64))
layer = numba.threading_layer()
import minigpt.runtime as R
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    d = R.configure()
print(json.dumps({"layer": layer, "d_layer": d["threading_layer"], "warned": [str(x.message) for x in w],
                  "notes": d["notes"]}))
"""


def test_configure_after_numbas_pool_started_warns_and_keeps_the_layer():
    r = run(LATE)
    assert r["d_layer"] == r["layer"]
    assert any("Numba's thread pool started (layer" in m and "cannot change now" in m for m in r["warned"])
    assert any("Numba's thread pool started (layer" in m and "Measured cost" in m for m in r["notes"])


def test_the_first_kernel_after_the_programs_own_numba_pool_says_so_without_warning():
    first_kernel = "    from minigpt.kernels import gelu\n    gelu.gelu_forward(np.ones(4, np.float32))\n"
    code = LATE.replace("    d = R.configure()", first_kernel + "    d = R.describe()")
    r = run(code)
    assert r["warned"] == []  # the automatic call never warns: describe() says it
    assert r["d_layer"] == r["layer"]
    assert any("cannot change now" in m for m in r["notes"])


TORCH_AFTER = r"""
import json, os
import minigpt
from minigpt.model import GPT
import torch
print(json.dumps({"env": {k: os.environ.get(k) for k in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY",
                                                         "NUMBA_THREADING_LAYER", "OPENBLAS_THREAD_TIMEOUT")},
                  "threads": torch.get_num_threads(), "gomp_before_torch": False}))
"""


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_torch_imported_after_minigpt_keeps_its_own_openmp_settings():
    # minigpt loaded no OpenMP runtime and set no variable, so torch starts as it would alone.
    r = run(TORCH_AFTER)
    assert all(v is None for v in r["env"].values())
    alone = run("import json, torch; print(json.dumps({'threads': torch.get_num_threads()}))")
    assert r["threads"] == alone["threads"]


def test_lazy_names_stay_the_functions_after_their_modules_load():
    r = run("import json, minigpt.gradcheck, minigpt.tensor\nfrom minigpt import gradcheck, tensor\n"
            "print(json.dumps([callable(gradcheck) and gradcheck.__name__, tensor.__name__]))")
    assert r == ["gradcheck", "tensor"]


# The plain user program: numpy first, then minigpt, then a model's forward. Nothing changes until that
# forward's first kernel launch, which applies the settings; the environment is left as it was.
FIRST_USE = r"""
import json, os, sys
import numpy as np
def maps():
    try:
        return open("/proc/self/maps").read()
    except OSError:
        return ""
def workers_cpu_ms(seconds=0.2):
    # CPU time of the process's other threads (OpenBLAS's workers) while the main thread sleeps
    me = os.getpid()
    def total():
        t = 0
        for tid in os.listdir(f"/proc/{me}/task"):
            if int(tid) != me:
                try:
                    t += int(open(f"/proc/{me}/task/{tid}/schedstat").read().split()[0])
                except OSError:
                    pass
        return t
    import time
    t0 = total(); time.sleep(seconds); return (total() - t0) / 1e6
env0 = dict(os.environ)
import minigpt
from minigpt.model import GPT, GPTConfig
import minigpt.runtime as R
if DISABLE:
    R.disable()
before = R.describe()
numba_layer_before = sys.modules["numba"].config.THREADING_LAYER
cfg = GPTConfig(vocab_size=64, context_length=16, emb_dim=16, n_layers=1, n_heads=2, drop_rate=0.0)
model = GPT(cfg)
logits = model(np.arange(8, dtype=np.int64).reshape(1, 8))
after = R.describe()
a = np.ones((256, 256), np.float32)
spin = []
for _ in range(2):
    a @ a
    spin.append(workers_cpu_ms())
import numba
print(json.dumps({"before": before["configured"], "after": after["configured"], "by": after["applied_by"],
                  "disabled_by": after["disabled_by"], "layer": numba.threading_layer(),
                  "numba_layer_before": numba_layer_before, "timeout": after["openblas_thread_timeout"],
                  "malloc": after["malloc_tuned"], "libgomp_before": before["libgomp_loaded"],
                  "env_same": dict(os.environ) == env0, "notes": after["notes"], "spin_ms": min(spin),
                  "sum": float(np.asarray(logits.data, np.float64).sum())}))
"""


@pytest.mark.skipif(not LINUX, reason="the OpenMP layer, mallopt and /proc are used on Linux only")
def test_the_first_kernel_launch_applies_the_runtime_and_leaves_the_environment_alone():
    r = run(FIRST_USE.replace("DISABLE", "False"))
    assert r["before"] is False and r["libgomp_before"] is False and r["numba_layer_before"] == "default"
    assert r["after"] is True and r["by"] == "the first kernel launch" and r["disabled_by"] is None
    assert r["layer"] == "omp" and r["timeout"] == "4" and r["malloc"] is True
    assert r["env_same"]  # settings reach the libraries directly; os.environ is as the program left it
    assert r["notes"] == []
    # OpenBLAS was loaded long before, yet its workers now sleep right after a GEMM instead of spinning
    assert r["spin_ms"] < 5


@pytest.mark.skipif(not LINUX, reason="the OpenMP layer, mallopt and /proc are used on Linux only")
@pytest.mark.parametrize("how", ["env", "function"])
def test_opting_out_keeps_the_process_untouched(how):
    r = run(FIRST_USE.replace("DISABLE", str(how == "function")), **({"MINIGPT_RUNTIME": "0"} if how == "env" else {}))
    assert r["before"] is False and r["after"] is False
    assert r["disabled_by"] == ("MINIGPT_RUNTIME=0" if how == "env" else "minigpt.runtime.disable()")
    assert r["timeout"] is None and r["malloc"] is False and r["env_same"]
    assert r["layer"] == "omp"  # Numba's own default here (no TBB), with GNU OpenMP's default long spin
    tuned = run(FIRST_USE.replace("DISABLE", "False"))
    assert r["sum"] == tuned["sum"]  # same numbers, bit for bit


def test_disable_after_the_runtime_is_in_force_is_a_clear_error():
    err = run("import numpy as np\nimport minigpt.runtime as R\nfrom minigpt.kernels import gelu\n"
              "gelu.gelu_forward(np.ones(4, np.float32))\nR.disable()", fail=True)
    assert "MiniGPTError: minigpt.runtime.disable(): the tuned runtime is already in force" in err


def test_an_unknown_minigpt_runtime_value_is_a_clear_error():
    err = run("import numpy as np\nfrom minigpt.kernels import gelu\ngelu.gelu_forward(np.ones(4, np.float32))",
              fail=True, MINIGPT_RUNTIME="maybe")
    assert "MINIGPT_RUNTIME='maybe' is not understood; use 0" in err.strip().splitlines()[-1]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_is_named_in_the_notes():
    code = ("import json, os, numpy as np\nimport minigpt.runtime as R\nfrom minigpt.kernels import gelu\n"
            "gelu.gelu_forward(np.ones(4, np.float32))\nr, w = os.pipe()\npid = os.fork()\n"
            "if pid == 0:\n    os.write(w, json.dumps(R.describe()['notes']).encode()); os._exit(0)\n"
            "os.waitpid(pid, 0)\nprint(os.read(r, 65536).decode())")
    notes = run(code)
    assert any("forked child" in n for n in notes)


def test_the_command_names_a_bad_minigpt_runtime_in_one_line():
    full = {k: v for k, v in os.environ.items() if k not in USER_VARS}
    full.update(PYTHONPATH=ROOT + os.pathsep + full.get("PYTHONPATH", ""), MINIGPT_RUNTIME="fast")
    out = subprocess.run([sys.executable, "-m", "minigpt", "--help"], env=full, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip() == ("minigpt: error: environment variable MINIGPT_RUNTIME='fast' is not understood; "
                                  "use 0 (leave the process untouched) or 1 (the tuned runtime, the default)")
