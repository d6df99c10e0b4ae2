"""``Optimizer``: the base class of cnnfast's optimizers, with ``torch.optim.Optimizer``'s
``param_groups``, ``state``, ``add_param_group``, ``zero_grad`` and state dicts.

Subclasses implement ``_update(group, param, grad, state)``, which calls one fused
C++ kernel (``cnnfast._C.<name>_step``) that updates the parameter and its state
arrays in place; the Python layer only walks the parameters.

State dicts have torch's layout: ``{"state": {index: {...}}, "param_groups":
[{..., "params": [index, ...]}]}`` with parameters numbered in group order, so
they can be saved with ``cnnfast.save`` and loaded into a new optimizer over a
model with the same parameter order.
"""
from __future__ import annotations

import copy
from collections import defaultdict
from typing import Any, Callable

import numpy as np

from .. import _device
from ..autograd import enable_grad
from ..tensor import Tensor


class _RequiredParameter:
    def __repr__(self):
        return "<required parameter>"


required = _RequiredParameter()


def _contiguous_param(p: Tensor) -> np.ndarray:
    # The kernels update arrays in place, so a parameter must own a C-contiguous,
    # writeable array; one that arrived as a view is given its own copy once.
    if not (p._array.flags.c_contiguous and p._array.flags.writeable):
        p._array = np.ascontiguousarray(p._array).copy()
    # The step writes in place: a graph that saved this parameter before the step must
    # refuse to backward through it, as torch's version counter does.
    p._vc[0] += 1
    return p._array


def _grad_array(p: Tensor) -> np.ndarray:
    g = p.grad._array
    if g.dtype != p._array.dtype:
        raise TypeError(f"grad: expected dtype {p._array.dtype} (the parameter's), got {g.dtype}")
    return g if g.flags.c_contiguous else np.ascontiguousarray(g)


class Optimizer:
    """Base class. ``params``: an iterable of Tensors, or of dicts (param groups) each
    with a ``"params"`` entry and optional per-group hyper-parameters."""

    def __init__(self, params, defaults: dict):
        self.defaults = defaults
        self.state: defaultdict = defaultdict(dict)
        self.param_groups: list[dict] = []
        if isinstance(params, Tensor):
            raise TypeError("params argument given to the optimizer should be an iterable of Tensors or dicts, "
                            f"but got {type(params).__name__}")
        param_groups = list(params)
        if len(param_groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(param_groups[0], dict):
            param_groups = [{"params": param_groups}]
        for group in param_groups:
            self.add_param_group(group)

    def __repr__(self):
        lines = [type(self).__name__ + " ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for key in sorted(group):
                if key != "params":
                    lines.append(f"    {key}: {group[key]}")
        lines.append(")")
        return "\n".join(lines)

    def __getstate__(self):
        return {"defaults": self.defaults, "state": self.state, "param_groups": self.param_groups}

    def add_param_group(self, param_group: dict) -> None:
        """Adds a group of parameters with its own hyper-parameters (missing ones take the defaults)."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        params = param_group["params"]
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, set):
            raise TypeError("optimizer parameters need to be organized in ordered collections, but the ordering "
                            "of tensors in sets will change between runs. Please use a list instead.")
        else:
            params = list(params)
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer can only optimize Tensors, but one of the params is {type(p).__name__}")
            if not p.is_leaf:
                raise ValueError("can't optimize a non-leaf Tensor")
            if p.dtype.kind != "f":
                raise TypeError(f"optimizer can only optimize floating-point Tensors, got dtype {p.dtype}")
        group = dict(param_group)
        group["params"] = params
        for name, default in self.defaults.items():
            if default is required and name not in group:
                raise ValueError(f"parameter group didn't specify a value of required optimization parameter {name}")
            group.setdefault(name, default)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if len({id(p) for p in params}) != len(params):
            raise ValueError("optimizer contains a parameter group with duplicate parameters")
        if any(id(p) in seen for p in params):
            raise ValueError("some parameters appear in more than one parameter group")
        self.param_groups.append(group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clears every parameter's ``.grad`` (to None by default, as torch)."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad._array[...] = 0

    def _init_state(self, group: dict, param: Tensor, state: dict) -> None:
        raise NotImplementedError

    def _update(self, group: dict, param: np.ndarray, grad: np.ndarray, state: dict) -> None:
        raise NotImplementedError

    def step(self, closure: Callable[[], Any] | None = None):
        """One update of every parameter that has a gradient. ``closure`` re-evaluates the
        model and returns the loss (it runs with grad enabled); its loss is returned."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if len(state) == 0:
                    self._init_state(group, p, state)
                self._update(group, _contiguous_param(p), _grad_array(p), state)
        return loss

    # ---- state dicts ---------------------------------------------------------------
    def state_dict(self) -> dict:
        """``{"state": {index: state}, "param_groups": [...]}``; arrays are references (as torch)."""
        index: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            ids = []
            for p in group["params"]:
                index.setdefault(id(p), len(index))
                ids.append(index[id(p)])
            packed["params"] = ids
            groups.append(packed)
        state = {index[id(p)]: s for p, s in self.state.items() if id(p) in index and s}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restores hyper-parameters and state; arrays are copied and cast to each parameter's dtype."""
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"loaded state dict has {len(saved_groups)} parameter groups, the optimizer has "
                             f"{len(self.param_groups)}")
        for i, (g, sg) in enumerate(zip(self.param_groups, saved_groups)):
            if len(g["params"]) != len(sg["params"]):
                raise ValueError(f"loaded state dict contains a parameter group ({i}) that doesn't match the size "
                                 f"of optimizer's group: {len(sg['params'])} vs {len(g['params'])} parameters")
        id_map = {}
        for g, sg in zip(self.param_groups, saved_groups):
            for p, idx in zip(g["params"], sg["params"]):
                id_map[int(idx)] = p
        new_state: defaultdict = defaultdict(dict)
        for idx, s in state_dict["state"].items():
            idx = int(idx)
            if idx not in id_map:
                continue
            p = id_map[idx]
            restored = {}
            for k, v in s.items():
                if isinstance(v, Tensor):
                    v = v._array
                if isinstance(v, _device.DeviceArray):
                    v = v.get()
                elif hasattr(v, "detach") and hasattr(v, "numpy"):  # a torch.Tensor from a torch checkpoint
                    v = v.detach().cpu().numpy()
                if isinstance(v, np.ndarray):
                    if v.shape != p.shape and v.ndim > 0:
                        raise ValueError(f"state[{idx}][{k!r}]: expected shape {p.shape}, got {v.shape}")
                    v = np.array(v, dtype=p.dtype if v.dtype.kind == "f" else v.dtype, copy=True)
                    if v.ndim == 0:
                        v = v.item()
                if k == "step" and v is not None:
                    v = int(v)
                else:
                    v = copy.deepcopy(v)
                if isinstance(v, np.ndarray) and v.ndim > 0 and p.device.type != "cpu":
                    v = _device.to_device(v, p.device)  # the state lives on its parameter's device
                restored[k] = v
            new_state[p] = restored
        self.state = new_state
        new_groups = []
        for g, sg in zip(self.param_groups, saved_groups):
            merged = copy.deepcopy({k: v for k, v in sg.items() if k != "params"})
            merged = {k: tuple(v) if isinstance(v, list) and isinstance(g.get(k), tuple) else v
                      for k, v in merged.items()}
            merged["params"] = g["params"]
            new_groups.append(merged)
        self.param_groups = new_groups


def _check_lr(lr) -> None:
    if not 0.0 <= lr:
        raise ValueError(f"Invalid learning rate: {lr}")
