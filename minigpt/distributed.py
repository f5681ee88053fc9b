"""Data-parallel training over MPI: one process per rank, identical steps on every rank.

The training loop talks to a *context* at a few points and never to MPI itself:

* ``broadcast_params(params)``: every rank starts from rank 0's weights;
* ``shard(x)``: this rank's contiguous slice of a global batch;
* ``zero_grads()`` / ``allreduce_grads(loss)``: gradients live in one flat buffer per dtype (each
  parameter's ``.grad`` is a view into it), summed over ranks by one ``Allreduce`` per step; the step's
  loss rides in the same buffer, so every rank gets the same global loss and the same gradients, hence the
  same gradient norm, clipping and update;
* ``sum_scalars(values)``: small float64 sums (the sharded validation loss);
* ``is_main``: rank 0 alone writes logs, plots, samples and checkpoints.

:class:`Single` is the context of a plain process: every call is a no-op (``shard`` returns its input),
and mpi4py is never imported. :func:`init` picks the context: MPI only when the process was started by
an MPI launcher with more than one rank (detected from the launcher's environment variables, before
mpi4py is imported), or when ``require=True`` (``minigpt train --ddp``).

Worked example (two ranks, ``--batch-size 4 --grad-accum 2``): the global batch is 4 x 2 x 2 = 16 windows
taken from the one seeded order; rank 0 reads windows 0-7 as two micro-batches of 4, rank 1 windows 8-15.
Each micro-batch's loss is back-propagated with the weight 1 / (2 ranks x 2 micro-batches), so the summed
gradient is the mean over the 16 windows: the step a single process would take with ``--batch-size 16``.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import contextlib
import math
import tempfile
import threading
import time
import zlib
from pathlib import Path

import numpy as np

from . import random as mrandom
from .errors import MiniGPTError
from .runtime import mpi_local_ranks as local_ranks  # noqa: F401  (ranks on this machine)

# (rank variable, size variable) set by MPI launchers: MPICH/Hydra and Intel MPI, Open MPI, MVAPICH, PMIx.
_LAUNCHER_VARS = (
    ("PMI_RANK", "PMI_SIZE"),
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),
    ("MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE"),
    ("PMIX_RANK", None),
)


# How long a rank waits in one collective (an Allreduce, a broadcast, the final barrier) for the others before
# it stops the job: a stopped (SIGSTOP), hung or swapping rank must not make the job wait forever. Seconds;
# 0 waits forever. The environment variable MINIGPT_COLLECTIVE_TIMEOUT sets it for every rank.
DEFAULT_COLLECTIVE_TIMEOUT = 600.0
TIMEOUT_VAR = "MINIGPT_COLLECTIVE_TIMEOUT"


def collective_timeout(environ=None) -> float:
    """The collective timeout in seconds from ``MINIGPT_COLLECTIVE_TIMEOUT`` (default 600; 0: no limit).

    >>> collective_timeout({"MINIGPT_COLLECTIVE_TIMEOUT": "30"})
    30.0
    """
    env = os.environ if environ is None else environ
    text = env.get(TIMEOUT_VAR, "").strip()
    if not text:
        return DEFAULT_COLLECTIVE_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value < 0:
        raise MiniGPTError(f"environment variable {TIMEOUT_VAR}={text!r}: use a number of seconds >= 0 "
                           "(0: wait forever)")
    return value


def launch_env(environ=None) -> tuple[int, int | None] | None:
    """(rank, world size or None when unknown) when an MPI launcher started this process, else None.

    Reads environment variables only: mpi4py is not imported.

    >>> launch_env({"PMI_RANK": "1", "PMI_SIZE": "2"})
    (1, 2)
    >>> launch_env({}) is None
    True
    """
    env = os.environ if environ is None else environ
    for rank_var, size_var in _LAUNCHER_VARS:
        if rank_var in env:
            try:
                rank = int(env[rank_var])
                size = int(env[size_var]) if size_var and size_var in env else None
            except ValueError:
                continue
            return rank, size
    return None


def init(require: bool = False):
    """The context of this process: :class:`Single`, or :class:`MPIContext` when started by an MPI launcher
    with more than one rank (or when ``require``, i.e. ``--ddp``)."""
    env = launch_env()
    if not require and (env is None or env[1] == 1):
        return Single()
    timeout = collective_timeout()  # checked before MPI starts
    try:
        from mpi4py import MPI
    except ImportError as e:
        how = ("--ddp needs MPI" if require else
               f"this process was started by an MPI launcher as rank {env[0]} of {env[1] or 'several'}, but MPI")
        raise MiniGPTError(f"{how} for Python is not installed ({e}); install it with "
                           "`pip install 'minigpt[mpi]'` (mpi4py and the mpich runtime)") from None
    comm = MPI.COMM_WORLD
    if env is not None and env[1] is not None and env[1] != comm.Get_size():
        raise MiniGPTError(f"the launcher started {env[1]} processes, but MPI reports a world of "
                           f"{comm.Get_size()}: mpi4py is built against another MPI than this mpiexec "
                           "(use the mpiexec of the MPI that mpi4py uses)")
    if comm.Get_size() == 1 and not require:
        return Single()
    return MPIContext(comm, MPI, timeout)


class Single:
    """One process: nothing to share."""

    rank = 0
    world_size = 1
    is_main = True

    def __init__(self):
        self.params = []

    def broadcast_params(self, params) -> None:
        pass

    def shard(self, x):
        return x

    def bind_grads(self, params) -> None:
        self.params = list(params)

    def zero_grads(self) -> None:
        for p in self.params:
            p.grad = None

    def allreduce_grads(self, loss: float) -> float:
        return loss

    def sum_scalars(self, values) -> np.ndarray:
        return np.asarray(values, dtype=np.float64)

    def check_same(self, what: dict) -> None:
        pass

    def agree(self, error: str | None, name_ranks: bool = True) -> None:
        if error is not None:
            raise MiniGPTError(error)

    def seed_dropout(self, seed: int, step: int) -> None:
        pass

    def in_sync(self, params) -> bool:
        return True

    def broadcast_dir(self, path):
        return path

    def describe(self) -> str:
        return "1 process"

    def close(self) -> None:
        pass


class MPIContext:
    """``world_size`` ranks over an MPI communicator (mpi4py's ``COMM_WORLD``)."""

    timeout = DEFAULT_COLLECTIVE_TIMEOUT  # seconds in one collective before the job is stopped (0: no limit)
    _waiting = None                       # (what, since when) while this rank is inside a collective
    _closing = False                      # set by close(): peers that exit from then on have finished

    def __init__(self, comm, MPI, timeout: float = DEFAULT_COLLECTIVE_TIMEOUT):
        self.comm, self.MPI = comm, MPI
        self.rank = comm.Get_rank()
        self.world_size = comm.Get_size()
        self.is_main = self.rank == 0
        self.params = []
        self.buffers = []  # one flat float buffer per dtype; the last slot of the first holds the loss
        self.timeout = float(timeout)
        self._waiting = None  # (what, since when) while this rank is inside a collective
        self.peers = []
        self._stop = threading.Event()
        self._watchdog = threading.Thread(target=self._watch_peers, name="minigpt-mpi-watchdog", daemon=True)
        self._watchdog.start()  # first: a rank that never arrives at the start-up exchange is a stall too
        with self._collective("the start-up exchange"):
            self.peers = comm.allgather((os.getpid(), socket.gethostname()))

    @contextlib.contextmanager
    def _collective(self, what: str):
        """Mark this rank as waiting in the collective ``what``: the watchdog stops the job when the wait
        exceeds ``timeout`` seconds."""
        self._waiting = (what, time.monotonic())
        try:
            yield
        finally:
            self._waiting = None

    # --- start-up ------------------------------------------------------------------------------------
    def describe(self) -> str:
        return f"{self.world_size} MPI ranks: " + ", ".join(
            f"rank {r} pid {pid} on {host}" for r, (pid, host) in enumerate(self.peers))

    def broadcast_params(self, params) -> None:
        with self._collective("the broadcast of rank 0's weights"):
            for p in params:
                self.comm.Bcast(p.data, root=0)

    def check_same(self, what: dict) -> None:
        """Refuse to start when the ranks disagree on ``what`` (model, training settings, data, seed)."""
        text = json.dumps(_flatten(what), sort_keys=True, default=str)
        digest = hashlib.sha256(text.encode()).hexdigest()
        with self._collective("the start-up comparison of the ranks' settings"):
            digests = self.comm.allgather(digest)
            if len(set(digests)) == 1:
                return
            texts = self.comm.allgather(text)
        mine0 = json.loads(texts[0])
        lines = []
        for r, t in enumerate(texts[1:], start=1):
            if digests[r] == digests[0]:
                continue
            other = json.loads(t)
            keys = sorted(k for k in set(mine0) | set(other) if mine0.get(k) != other.get(k))
            lines.append(f"rank {r} differs from rank 0 in " + ", ".join(
                f"{k} ({_short(other.get(k))} vs {_short(mine0.get(k))})" for k in keys))
        err = MiniGPTError("the ranks were started with different configurations: " + "; ".join(lines)
                           + "; start every rank with the same options and files")
        err.all_ranks = True
        raise err

    def agree(self, error: str | None, name_ranks: bool = True) -> None:
        """Collective: raise on every rank when any rank had an error (with the rank's message, prefixed
        with the rank unless every rank failed alike or ``name_ranks`` is False)."""
        with self._collective("the exchange of the ranks' errors"):
            errors = self.comm.allgather(error)
        bad = [(r, e) for r, e in enumerate(errors) if e is not None]
        if bad:
            if not name_ranks or (len({e for _, e in bad}) == 1 and len(bad) == self.world_size):
                msg = bad[0][1]
            else:
                msg = "; ".join(f"rank {r}: {e}" for r, e in bad)
            err = MiniGPTError(msg)
            err.all_ranks = True
            raise err

    def broadcast_dir(self, path):
        """Rank 0's files in ``path`` (a checkpoint folder) copied to a private temporary folder on the
        other ranks (machines need not share a file system); returns the folder to read on this rank."""
        names = None
        if self.is_main:
            names = sorted((f.name, f.stat().st_size) for f in Path(path).iterdir() if f.is_file())
        with self._collective("the broadcast of the checkpoint's files"):
            names = self.comm.bcast(names, root=0)
            target = Path(path) if self.is_main else Path(tempfile.mkdtemp(prefix=f"minigpt-rank{self.rank}-"))
            chunk = 1 << 28
            for name, size in names:
                if self.is_main:
                    buf = np.fromfile(Path(path) / name, dtype=np.uint8)
                else:
                    buf = np.empty(size, dtype=np.uint8)
                for start in range(0, size, chunk):
                    self.comm.Bcast(buf[start:start + chunk], root=0)
                if not self.is_main:
                    buf.tofile(target / name)
        return target

    # --- every step ----------------------------------------------------------------------------------
    def shard(self, x):
        n = x.shape[0]
        if n % self.world_size:
            raise MiniGPTError(f"a global batch of {n} cannot be split over {self.world_size} ranks")
        k = n // self.world_size
        return x[self.rank * k:(self.rank + 1) * k]

    def bind_grads(self, params) -> None:
        """Allocate the flat gradient buffers and make each parameter's ``.grad`` a view into them."""
        self.params = list(params)
        by_dtype = {}
        for p in self.params:
            by_dtype.setdefault(np.dtype(p.data.dtype), []).append(p)
        self.buffers, self.views = [], []
        for i, (dt, ps) in enumerate(by_dtype.items()):
            n = sum(p.data.size for p in ps) + (1 if i == 0 else 0)
            buf = np.zeros(n, dtype=dt)
            off = 0
            for p in ps:
                self.views.append((p, buf[off:off + p.data.size].reshape(p.data.shape)))
                off += p.data.size
            self.buffers.append(buf)
        self.zero_grads()

    def zero_grads(self) -> None:
        for buf in self.buffers:
            buf.fill(0)
        for p, view in self.views:
            p.grad = view

    def allreduce_grads(self, loss: float) -> float:
        """Sum the gradients (already weighted by 1/(ranks x micro-batches)) and the weighted loss over
        the ranks: one Allreduce per dtype, in place. Returns the global loss."""
        for p, view in self.views:
            if p.grad is not view:  # something replaced the view (or dropped it): fold it back
                if p.grad is not None:
                    view[...] = p.grad
                p.grad = view
        self.buffers[0][-1] = loss
        with self._collective("the gradient Allreduce"):
            for buf in self.buffers:
                self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        return float(self.buffers[0][-1])

    def sum_scalars(self, values) -> np.ndarray:
        arr = np.array(values, dtype=np.float64)
        with self._collective("the sum of the validation losses"):
            self.comm.Allreduce(self.MPI.IN_PLACE, arr, op=self.MPI.SUM)
        return arr

    def seed_dropout(self, seed: int, step: int) -> None:
        """Dropout (and anything else drawing from minigpt's global generator during a step) on this rank
        draws from (seed, rank, step): different masks per rank, reproducible after a resume."""
        mrandom.manual_seed((int(seed), self.rank, int(step)))

    def in_sync(self, params) -> bool:
        """Collective: True when every rank holds the same weights (a CRC-32 of their bytes, compared at
        each checkpoint). Identical reduced gradients keep them identical; should an MPI reduction ever
        round differently on different ranks, rank 0's weights are broadcast again and False returned."""
        crc = 0
        for p in params:
            crc = zlib.crc32(np.ascontiguousarray(p.data).view(np.uint8), crc)
        with self._collective("the comparison of the ranks' weights"):
            crcs = self.comm.allgather(crc)
        if len(set(crcs)) == 1:
            return True
        self.broadcast_params(params)
        return False

    # --- faults --------------------------------------------------------------------------------------
    def _watch_peers(self) -> None:
        """Stop this rank when a rank on the same machine has died, or when this rank has waited longer
        than ``timeout`` seconds in one collective (a peer stopped, hung or far behind). MPICH's and Open
        MPI's launchers already kill the whole job when a rank dies or exits with an error; this covers
        launchers that do not (an Allreduce with a dead peer may otherwise wait forever), and stopped
        peers, which no launcher notices."""
        host = socket.gethostname()
        local = None
        while not self._stop.wait(min(1.0, self.timeout / 4) if self.timeout > 0 else 1.0):
            waiting = self._waiting
            if waiting is not None and self.timeout > 0 and time.monotonic() - waiting[1] > self.timeout:
                print(f"minigpt: error: rank {self.rank} waited more than {self.timeout:g} s for the other ranks in "
                      f"{waiting[0]} (a rank is stopped, hung or much slower); rank {self.rank} stops. The last "
                      f"complete checkpoint is kept: restart with --resume ({TIMEOUT_VAR} sets the wait in "
                      "seconds, 0: no limit)", file=sys.stderr, flush=True)
                os._exit(2)
            if self._closing:
                continue
            if local is None:
                if not self.peers:
                    continue
                local = [(r, pid) for r, (pid, h) in enumerate(self.peers) if h == host and r != self.rank]
            for r, pid in local:
                if not _alive(pid):
                    print(f"minigpt: error: rank {r} (pid {pid} on {host}) died; rank {self.rank} stops. The "
                          "last complete checkpoint is kept: restart with --resume", file=sys.stderr, flush=True)
                    os._exit(3)

    def abort(self, code: int) -> None:
        sys.stderr.flush()
        sys.stdout.flush()
        self.comm.Abort(code)

    def close(self) -> None:
        """Collective: stop watching the peers, then wait for every rank (rank 0 may still be writing a
        sample or a checkpoint: a rank that exits first must not look like a dead one)."""
        if not self._stop.is_set():
            self._closing = True  # from here a peer that exits has finished, not died
            with self._collective("the final barrier"):
                self.comm.Barrier()
            self._stop.set()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True


def _flatten(d: dict, prefix: str = "") -> dict:
    """{"train": {"seed": 1}} -> {"train.seed": 1}, so a mismatch names the very setting."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _short(v) -> str:
    s = json.dumps(v, sort_keys=True, default=str)
    return s if len(s) <= 60 else s[:57] + "..."

