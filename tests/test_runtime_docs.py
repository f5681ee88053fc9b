"""docs/runtime.md: every python and bash block runs as pasted, each in a fresh process (the runtime is
chosen once per process), and prints what the page says it prints."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "runtime.md"
CLEAN = ("MINIGPT_RUNTIME", "MINIGPT_KERNELS", "NUMBA_THREADING_LAYER", "GOMP_SPINCOUNT", "OMP_WAIT_POLICY",
         "OPENBLAS_THREAD_TIMEOUT")


def blocks(kind):
    return re.findall(rf"```{kind}\n(.*?)```", PAGE.read_text(), flags=re.S)


@pytest.fixture
def env(tmp_path):
    # a `minigpt` command on PATH, as `pip install -e .` makes it, running this checkout
    bindir = tmp_path / "bin"
    bindir.mkdir()
    shim = bindir / "minigpt"
    shim.write_text(f"#!/bin/sh\nexec {sys.executable} -m minigpt \"$@\"\n")
    shim.chmod(0o755)
    e = {k: v for k, v in os.environ.items() if k not in CLEAN}
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    e["PATH"] = f"{bindir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{e.get('PATH', '')}"
    return e


def run(args, env, cwd):
    out = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()


def test_the_page_has_its_blocks():
    assert len(blocks("python")) == 2 and len(blocks("bash")) == 3


def test_describe_block(env, tmp_path):
    lines = run([sys.executable, "-c", blocks("python")[0]], env, tmp_path)
    assert lines[0] == "False"
    assert lines[1] == "True the first kernel launch"
    if sys.platform.startswith("linux"):
        assert lines[2] == "omp 4 []"
    assert lines[3].startswith("runtime: tuned (applied by the first kernel launch): Numba layer ")


def test_disable_block(env, tmp_path):
    lines = run([sys.executable, "-c", blocks("python")[1]], env, tmp_path)
    assert lines == ["runtime: untuned (minigpt.runtime.disable()): the untouched process, slower than minigpt's "
                     "default; times here are not the ones minigpt users get"]


def test_bash_blocks(env, tmp_path):
    profile, off, kernels = blocks("bash")
    lines = run(["bash", "-e", "-c", profile], env, tmp_path)
    assert lines[-1].startswith("runtime: tuned (applied by configure()): ")
    assert run(["bash", "-e", "-c", off], env, tmp_path) == ["MINIGPT_RUNTIME=0"]
    assert run(["bash", "-e", "-c", kernels], env, tmp_path) == ["numpy"]
    # and the untuned profile says so, as the page states
    lines = run(["bash", "-e", "-c", "MINIGPT_RUNTIME=0 " + profile], env, tmp_path)
    assert lines[-1].startswith("runtime: untuned (MINIGPT_RUNTIME=0): ")
