"""Optimisers (AdamW, SGD), gradient clipping and the warmup + cosine learning-rate schedule.

A parameter is any object with
  ``.data``           a NumPy float array, updated IN PLACE (the model may hold views of it; never rebound),
  ``.grad``           a NumPy array of the same shape, or None (the parameter is skipped),
  ``.requires_grad``  a bool (False: skipped).
``minigpt.nn.Parameter`` has exactly these; tests use a small stand-in class.

The interface follows torch.optim: ``AdamW(params, lr=..., ...)`` where params is an iterable of parameters
or a list of param-group dicts (``{"params": [...], "weight_decay": 0.0}``), ``param_groups`` (a list of
dicts whose "lr" a schedule sets), ``step()``, ``zero_grad()``, ``state_dict()`` / ``load_state_dict()``.

Checkpoint format (``state_dict()``): ``{"arrays": {name: ndarray}, "meta": {...JSON-able...}}`` so the
arrays can go into a safetensors file and the meta into JSON. Array names are
``state.<i>.exp_avg`` / ``state.<i>.exp_avg_sq`` (AdamW) and ``state.<i>.momentum_buffer`` (SGD), where
``<i>`` counts parameters across all groups in order.
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np

from .errors import MiniGPTError
from .kernels.adamw import adamw_update, sum_squares

__all__ = ["Optimizer", "AdamW", "SGD", "clip_grad_norm", "CosineWithWarmup", "lr_at", "split_decay_groups"]


def _grad_array(p):
    g = p.grad
    if g is None or isinstance(g, np.ndarray):
        return g
    data = getattr(g, "data", None)  # a Tensor-like gradient
    if isinstance(data, np.ndarray):
        return data
    return np.asarray(g)


def _flat_view(a: np.ndarray):
    """A 1-D view of a (no copy) when a is C-contiguous, else None."""
    if a.flags.c_contiguous:
        return a.reshape(-1)
    return None


class Optimizer:
    """Base class: parameter groups, per-parameter state, zero_grad and the checkpoint format."""

    _hyper: tuple[str, ...] = ()
    _state_arrays: tuple[str, ...] = ()

    def __init__(self, params, defaults: dict):
        if isinstance(params, np.ndarray) or hasattr(params, "data") and hasattr(params, "requires_grad"):
            raise MiniGPTError(f"{type(self).__name__}: params must be an iterable of parameters or of "
                               f"param-group dicts, not a single parameter")
        params = list(params)
        if not params:
            raise MiniGPTError(f"{type(self).__name__} got an empty parameter list")
        if all(isinstance(p, dict) for p in params):
            groups = params
        elif any(isinstance(p, dict) for p in params):
            raise MiniGPTError(f"{type(self).__name__}: mix of parameters and param-group dicts; pass one kind")
        else:
            groups = [{"params": params}]
        self.defaults = dict(defaults)
        self.param_groups: list[dict] = []
        self.state: list[dict] = []
        seen: set[int] = set()
        for gi, g in enumerate(groups):
            if "params" not in g:
                raise MiniGPTError(f"param group {gi} has no 'params' entry")
            unknown = set(g) - {"params", "lr_scale", "name", *self._hyper}
            if unknown:
                raise MiniGPTError(f"param group {gi}: unknown option(s) {sorted(unknown)}; "
                                   f"known: {sorted(self._hyper)}")
            plist = list(g["params"]) if not isinstance(g["params"], np.ndarray) else [g["params"]]
            for p in plist:
                if not isinstance(getattr(p, "data", None), np.ndarray):
                    raise MiniGPTError(f"param group {gi}: {type(p).__name__} is not a parameter "
                                       f"(needs a NumPy .data array, .grad and .requires_grad)")
                if p.data.dtype not in (np.float32, np.float64):
                    raise MiniGPTError(f"param group {gi}: parameters must be float32 or float64, "
                                       f"got {p.data.dtype}")
                if id(p) in seen:
                    raise MiniGPTError(f"param group {gi}: a parameter appears more than once "
                                       f"(in this or an earlier group)")
                seen.add(id(p))
            group = {**self.defaults, **{k: v for k, v in g.items() if k != "params"}, "params": plist}
            self._validate_hyper(group, gi)
            self.param_groups.append(group)
            self.state.extend({} for _ in plist)

    # --- helpers -----------------------------------------------------------------------------------
    def _validate_hyper(self, group: dict, gi: int) -> None:
        lr = group.get("lr")
        if lr is None or not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr >= 0):
            raise MiniGPTError(f"param group {gi}: lr must be a finite number >= 0, got {lr!r}")

    def _params(self):
        """(index across groups, group, parameter) for every parameter."""
        i = 0
        for group in self.param_groups:
            for p in group["params"]:
                yield i, group, p
                i += 1

    @property
    def num_params(self) -> int:
        return sum(len(g["params"]) for g in self.param_groups)

    def _live_grad(self, i, p):
        """The gradient as an array of the parameter's shape, or None when the parameter is skipped."""
        if not getattr(p, "requires_grad", True):
            return None
        g = _grad_array(p)
        if g is None:
            return None
        if g.shape != p.data.shape:
            raise MiniGPTError(f"parameter {i}: gradient shape {g.shape} does not match parameter shape "
                               f"{p.data.shape}")
        return g

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop the gradients (grad = None), or fill them with zeros when set_to_none=False."""
        for _, _, p in self._params():
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                g = _grad_array(p)
                g[...] = 0

    # --- checkpoints -------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """{"arrays": {name: ndarray}, "meta": JSON-able dict}; arrays are copies."""
        arrays = {}
        steps = []
        for i, _, _ in self._params():
            st = self.state[i]
            steps.append(int(st.get("step", 0)))
            for key in self._state_arrays:
                if key in st:
                    arrays[f"state.{i}.{key}"] = st[key].copy()
        groups = []
        for g in self.param_groups:
            meta_g = {k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items() if k != "params"}
            meta_g["num_params"] = len(g["params"])
            meta_g["shapes"] = [list(p.data.shape) for p in g["params"]]
            groups.append(meta_g)
        meta = {"optimizer": type(self).__name__, "num_params": self.num_params, "param_groups": groups,
                "steps": steps}
        return {"arrays": arrays, "meta": meta}

    def load_state_dict(self, sd: dict) -> None:
        """Restore state and per-group hyperparameters from ``state_dict()`` output (validated first)."""
        name = type(self).__name__
        if not isinstance(sd, dict) or "arrays" not in sd or "meta" not in sd:
            raise MiniGPTError(f"{name}.load_state_dict: expected a dict with 'arrays' and 'meta'")
        arrays, meta = sd["arrays"], sd["meta"]
        if meta.get("optimizer") != name:
            raise MiniGPTError(f"{name}.load_state_dict: the state was saved by {meta.get('optimizer')!r}, "
                               f"not {name}")
        if meta.get("num_params") != self.num_params:
            raise MiniGPTError(f"{name}.load_state_dict: the state has {meta.get('num_params')} parameters, "
                               f"this optimizer has {self.num_params}")
        mgroups = meta.get("param_groups", [])
        if len(mgroups) != len(self.param_groups):
            raise MiniGPTError(f"{name}.load_state_dict: the state has {len(mgroups)} param groups, "
                               f"this optimizer has {len(self.param_groups)}")
        for gi, (mg, g) in enumerate(zip(mgroups, self.param_groups)):
            if mg.get("num_params") != len(g["params"]):
                raise MiniGPTError(f"{name}.load_state_dict: param group {gi} has {mg.get('num_params')} "
                                   f"parameters in the state, {len(g['params'])} here")
        steps = meta.get("steps")
        if not isinstance(steps, list) or len(steps) != self.num_params:
            raise MiniGPTError(f"{name}.load_state_dict: 'steps' must list one count per parameter")
        expected = set()
        new_state: list[dict] = []
        for i, _, p in self._params():
            st: dict = {}
            if steps[i]:
                st["step"] = int(steps[i])
                for key in self._state_arrays:
                    k = f"state.{i}.{key}"
                    if k not in arrays:
                        raise MiniGPTError(f"{name}.load_state_dict: missing array {k!r}")
                    a = np.asarray(arrays[k])
                    if a.dtype.kind != "f":
                        raise MiniGPTError(f"{name}.load_state_dict: {k} has dtype {a.dtype}; the moments must be "
                                           "floating point")
                    if a.shape != p.data.shape:
                        raise MiniGPTError(f"{name}.load_state_dict: {k} has shape {a.shape}, parameter {i} "
                                           f"has shape {p.data.shape}")
                    st[key] = np.array(a, dtype=self._state_dtype(p), copy=True, order="C")
                    expected.add(k)
            new_state.append(st)
        extra = set(arrays) - expected
        if extra:
            raise MiniGPTError(f"{name}.load_state_dict: unexpected arrays {sorted(extra)[:5]}")
        for mg, g in zip(mgroups, self.param_groups):
            for k in self._hyper:
                if k in mg:
                    g[k] = tuple(mg[k]) if isinstance(mg[k], list) else mg[k]
            if "lr_scale" in mg:
                g["lr_scale"] = mg["lr_scale"]
        for gi, g in enumerate(self.param_groups):
            self._validate_hyper(g, gi)
        self.state = new_state

    @staticmethod
    def _state_dtype(p):
        return np.float32 if p.data.dtype == np.float32 else np.float64

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}("]
        for gi, g in enumerate(self.param_groups):
            hyper = ", ".join(f"{k}={g[k]}" for k in self._hyper if k in g)
            lines.append(f"  group {gi}: {len(g['params'])} params, {hyper}")
        return "\n".join(lines) + "\n)"


class AdamW(Optimizer):
    """AdamW with decoupled weight decay, matching torch.optim.AdamW (amsgrad=False) to float32 rounding.

    For each parameter with a gradient, at step t (1, 2, ...):
        p <- p * (1 - lr * weight_decay)
        m <- beta1 * m + (1 - beta1) * g;   v <- beta2 * v + (1 - beta2) * g^2
        p <- p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
    fused in one Numba kernel per parameter (``minigpt.kernels.adamw.adamw_update``). The moments m, v are
    allocated on a parameter's first step, in float32 for float32 parameters.
    """

    _hyper = ("lr", "betas", "eps", "weight_decay")
    _state_arrays = ("exp_avg", "exp_avg_sq")

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01):
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay})

    def _validate_hyper(self, group, gi):
        super()._validate_hyper(group, gi)
        betas = group["betas"]
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2
                and all(isinstance(b, (int, float)) and 0.0 <= b < 1.0 for b in betas)):
            raise MiniGPTError(f"param group {gi}: betas must be two numbers in [0, 1), got {betas!r}")
        group["betas"] = (float(betas[0]), float(betas[1]))
        if not (isinstance(group["eps"], (int, float)) and group["eps"] >= 0):
            raise MiniGPTError(f"param group {gi}: eps must be >= 0, got {group['eps']!r}")
        wd = group["weight_decay"]
        if not (isinstance(wd, (int, float)) and math.isfinite(wd) and wd >= 0):
            raise MiniGPTError(f"param group {gi}: weight_decay must be a finite number >= 0, got {wd!r}")

    def step(self) -> None:
        for i, group, p in self._params():
            g = self._live_grad(i, p)
            if g is None:
                continue
            data = p.data
            st = self.state[i]
            if not st:
                dt = self._state_dtype(p)
                st["step"] = 0
                st["exp_avg"] = np.zeros(data.shape, dtype=dt)
                st["exp_avg_sq"] = np.zeros(data.shape, dtype=dt)
            st["step"] += 1
            t = st["step"]
            beta1, beta2 = group["betas"]
            g_flat = np.ascontiguousarray(g, dtype=data.dtype).reshape(-1)
            p_flat = _flat_view(data)
            scratch = p_flat is None
            if scratch:  # non-contiguous parameter view: update a copy, then write it back in place
                p_flat = np.ascontiguousarray(data).reshape(-1)
            adamw_update(p_flat, g_flat, st["exp_avg"].reshape(-1), st["exp_avg_sq"].reshape(-1),
                         group["lr"], beta1, beta2, group["eps"], group["weight_decay"],
                         1.0 - beta1 ** t, 1.0 - beta2 ** t)
            if scratch:
                data[...] = p_flat.reshape(data.shape)


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum and (coupled, L2) weight decay, as torch.optim.SGD:

        d = g + weight_decay * p
        b = d (first step) or momentum * b + d;   d = b   (when momentum > 0)
        p <- p - lr * d
    """

    _hyper = ("lr", "momentum", "weight_decay")
    _state_arrays = ("momentum_buffer",)

    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})

    def _validate_hyper(self, group, gi):
        super()._validate_hyper(group, gi)
        for k in ("momentum", "weight_decay"):
            v = group[k]
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise MiniGPTError(f"param group {gi}: {k} must be a finite number >= 0, got {v!r}")

    def step(self) -> None:
        for i, group, p in self._params():
            g = self._live_grad(i, p)
            if g is None:
                continue
            d = g.astype(p.data.dtype, copy=True)
            if group["weight_decay"]:
                d += group["weight_decay"] * p.data
            st = self.state[i]
            st["step"] = st.get("step", 0) + 1
            mom = group["momentum"]
            if mom:
                buf = st.get("momentum_buffer")
                if buf is None:
                    st["momentum_buffer"] = buf = d.copy()
                else:
                    buf *= mom
                    buf += d
                d = buf
            p.data -= group["lr"] * d


def clip_grad_norm(params: Iterable, max_norm: float) -> float:
    """Scale all gradients in place so that their global L2 norm is at most ``max_norm``.

    The norm is taken over every parameter that has a gradient (and requires_grad), accumulated in float64.
    Returns the norm BEFORE clipping. When it is not finite (inf or nan) nothing is scaled and the value is
    returned as is, so the caller can stop the run. Scaling uses coef = max_norm / (norm + 1e-6), as torch.
    """
    if not (isinstance(max_norm, (int, float)) and max_norm > 0):
        raise MiniGPTError(f"clip_grad_norm: max_norm must be > 0, got {max_norm!r}")
    grads = []
    for p in params:
        if not getattr(p, "requires_grad", True):
            continue
        g = _grad_array(p)
        if g is not None:
            grads.append(g)
    total = 0.0
    for g in grads:
        flat = _flat_view(g)
        total += sum_squares(flat if flat is not None else np.ascontiguousarray(g).reshape(-1))
    norm = math.sqrt(total)
    if not math.isfinite(norm):
        return norm
    coef = max_norm / (norm + 1e-6)
    if coef < 1.0:
        for g in grads:
            g *= coef
    return norm


# --- learning-rate schedule --------------------------------------------------------------------------
def lr_at(step: int, *, peak_lr: float, warmup_steps: int, total_steps: int, min_lr: float = 0.0,
          initial_lr: float = 0.0) -> float:
    """Learning rate for optimizer step ``step`` (0-based: the first update is step 0).

        step < warmup_steps:           initial_lr + (peak_lr - initial_lr) * (step + 1) / warmup_steps
        warmup_steps <= step < total:  min_lr + (peak_lr - min_lr) * 0.5 * (1 + cos(pi * progress)),
                                       progress = (step - warmup_steps) / (total_steps - warmup_steps)
        step >= total_steps:           min_lr

    So the last warmup step (warmup_steps - 1) and the first cosine step both use peak_lr, the first step
    never uses lr 0, and the rate reaches min_lr at total_steps and stays there.
    """
    if step < 0:
        raise MiniGPTError(f"lr_at: step must be >= 0, got {step}")
    if step < warmup_steps:
        return initial_lr + (peak_lr - initial_lr) * (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return min_lr + (peak_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


class CosineWithWarmup:
    """Linear warmup then cosine decay to ``min_lr`` (formula in :func:`lr_at`), driving an optimizer.

    Use like torch's schedulers: construction sets the rate of step 0; call ``step()`` after each
    ``optimizer.step()`` to set the rate of the next one. Every param group gets ``lr_at(step) *
    group.get("lr_scale", 1.0)``. ``optimizer`` may be None to use the schedule as a plain function object
    (``sched.lr_at(step)``). ``state_dict()`` / ``load_state_dict()`` hold the step count, for resuming.
    """

    def __init__(self, optimizer, peak_lr: float, warmup_steps: int, total_steps: int, min_lr: float = 0.0,
                 initial_lr: float = 0.0):
        for name, v in (("peak_lr", peak_lr), ("min_lr", min_lr), ("initial_lr", initial_lr)):
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise MiniGPTError(f"CosineWithWarmup: {name} must be a finite number >= 0, got {v!r}")
        if not (isinstance(warmup_steps, int) and warmup_steps >= 0):
            raise MiniGPTError(f"CosineWithWarmup: warmup_steps must be an int >= 0, got {warmup_steps!r}")
        if not (isinstance(total_steps, int) and total_steps >= 1):
            raise MiniGPTError(f"CosineWithWarmup: total_steps must be an int >= 1, got {total_steps!r}")
        if warmup_steps > total_steps:
            raise MiniGPTError(f"CosineWithWarmup: warmup_steps ({warmup_steps}) exceeds total_steps "
                               f"({total_steps})")
        if min_lr > peak_lr:
            raise MiniGPTError(f"CosineWithWarmup: min_lr ({min_lr}) is above peak_lr ({peak_lr})")
        self.optimizer = optimizer
        self.peak_lr, self.min_lr, self.initial_lr = float(peak_lr), float(min_lr), float(initial_lr)
        self.warmup_steps, self.total_steps = warmup_steps, total_steps
        self.last_step = 0
        self._apply()

    def lr_at(self, step: int) -> float:
        return lr_at(step, peak_lr=self.peak_lr, warmup_steps=self.warmup_steps, total_steps=self.total_steps,
                     min_lr=self.min_lr, initial_lr=self.initial_lr)

    def get_lr(self) -> float:
        """The rate of the step about to be taken."""
        return self.lr_at(self.last_step)

    def _apply(self) -> None:
        if self.optimizer is None:
            return
        lr = self.get_lr()
        for g in self.optimizer.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)

    def step(self) -> float:
        """Advance one step and set the optimizer's rate for it; returns that rate."""
        self.last_step += 1
        self._apply()
        return self.get_lr()

    def set_step(self, step: int) -> None:
        if step < 0:
            raise MiniGPTError(f"CosineWithWarmup.set_step: step must be >= 0, got {step}")
        self.last_step = int(step)
        self._apply()

    def state_dict(self) -> dict:
        return {"last_step": self.last_step, "peak_lr": self.peak_lr, "warmup_steps": self.warmup_steps,
                "total_steps": self.total_steps, "min_lr": self.min_lr, "initial_lr": self.initial_lr}

    def load_state_dict(self, d: dict) -> None:
        if "last_step" not in d:
            raise MiniGPTError("CosineWithWarmup.load_state_dict: missing 'last_step'")
        for k in ("peak_lr", "min_lr", "initial_lr"):
            if k in d:
                setattr(self, k, float(d[k]))
        for k in ("warmup_steps", "total_steps"):
            if k in d:
                setattr(self, k, int(d[k]))
        self.set_step(int(d["last_step"]))


def split_decay_groups(named_params, weight_decay: float) -> list[dict]:
    """Two param groups: weight decay for matrices (ndim >= 2: linear weights, embeddings), none for
    vectors (biases, LayerNorm scales and shifts). ``named_params``: (name, parameter) pairs or parameters.
    Parameters that do not require grad are left out."""
    decay, no_decay = [], []
    for item in named_params:
        p = item[1] if isinstance(item, tuple) else item
        if not getattr(p, "requires_grad", True):
            continue
        (decay if p.data.ndim >= 2 else no_decay).append(p)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    if not groups:
        raise MiniGPTError("split_decay_groups: no trainable parameters")
    return groups
