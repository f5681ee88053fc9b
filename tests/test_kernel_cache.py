"""The warm-cache stamp depends on what Numba's cache depends on, not on how the interpreter was spelled:
after `python -m pytest`, the `minigpt` console script (`#!.../python3`) must not announce a compilation."""
import json
import os
import subprocess
import sys
from pathlib import Path

from minigpt.train import kernel_cache

REPO = Path(__file__).resolve().parents[1]
CHILD = ("import json, sys; from minigpt.train import kernel_cache as k; p = k.Path(sys.argv[2]); "
         "k.mark_warm(12.0, p) if sys.argv[1] == 'mark' else print(json.dumps([k._fingerprint(), k.is_warm(p)]))")


def test_fingerprint_ignores_the_executable_spelling(monkeypatch):
    monkeypatch.setattr(sys, "executable", "/venv/bin/python")
    a = kernel_cache._fingerprint()
    monkeypatch.setattr(sys, "executable", "/venv/bin/python3")
    assert kernel_cache._fingerprint() == a
    assert {"python", "numba", "cpu", "sources"} == set(a) and "gelu.py" in a["sources"]


def test_fingerprint_follows_the_cpu_numba_compiles_for(monkeypatch):
    from numba.core import config

    a = kernel_cache._fingerprint()
    monkeypatch.setattr(config, "CPU_NAME", "generic")
    assert kernel_cache._fingerprint()["cpu"] == "generic" and kernel_cache._fingerprint() != a


def _spellings() -> list[str]:
    """Two or more names of the running interpreter: its own path and the other names beside it that
    lead to the same file (python, python3, python3.X in a venv), else a symlink made here."""
    exe = Path(sys.executable)
    same = [str(p) for p in sorted(exe.parent.glob("python*"))
            if p.is_file() and os.access(p, os.X_OK) and p.resolve() == exe.resolve()]
    return list(dict.fromkeys([str(exe), *same]))


def test_two_spellings_of_one_interpreter_share_the_warm_stamp(tmp_path):
    names = _spellings()
    if len(names) < 2:  # no second name beside it: the fingerprint test above still holds
        names.append(str(Path(sys.executable).resolve()))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    stamp = tmp_path / kernel_cache.STAMP_NAME
    subprocess.run([names[0], "-c", CHILD, "mark", str(stamp)], env=env, check=True, timeout=120)
    seen = []
    for exe in names:
        r = subprocess.run([exe, "-c", CHILD, "check", str(stamp)], env=env, capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stderr
        seen.append(json.loads(r.stdout))
    assert all(fp == seen[0][0] for fp, _ in seen), [n for n, (fp, _) in zip(names, seen) if fp != seen[0][0]]
    assert all(warm for _, warm in seen), names  # marked warm through one name, warm through every other
