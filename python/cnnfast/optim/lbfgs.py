"""L-BFGS with ``torch.optim.LBFGS``'s API: ``step(closure)`` runs up to ``max_iter``
quasi-Newton iterations, each re-evaluating the loss through ``closure``.

The search direction comes from the two-loop recursion over the last ``history_size``
curvature pairs (s = x_{k+1} - x_k, y = g_{k+1} - g_k), scaled by the initial Hessian
guess H0 = s'y / y'y (Nocedal & Wright, Numerical Optimization, Alg. 7.4). The step
length is either fixed (``lr``; the first iteration of a run is shortened to
``lr * min(1, 1/|g|_1)`` so an unscaled gradient cannot throw the iterate far away) or
found by a strong-Wolfe line search (``line_search_fn="strong_wolfe"``: bracketing
then zooming with safeguarded cubic interpolation, N&W Alg. 3.5/3.6). These are the
choices torch makes, so on the same problem the iterates agree with torch's up to
rounding.

All parameters are handled as one flat vector (in the parameters' dtype); the
arithmetic runs on NumPy, since the cost is in the closure, not here. One parameter
group only, as torch.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from ..autograd import enable_grad
from .optimizer import Optimizer, _check_lr


def _cubic_min(x1: float, f1: float, g1: float, x2: float, f2: float, g2: float,
               bounds: tuple | None = None) -> float:
    """Minimiser of the cubic through (x1, f1) and (x2, f2) with slopes g1, g2, clipped to
    ``bounds`` (default: the interval between x1 and x2); the interval's middle when the
    cubic has no real minimiser."""
    lo, hi = bounds if bounds is not None else (min(x1, x2), max(x1, x2))
    d1 = g1 + g2 - 3.0 * (f1 - f2) / (x1 - x2)
    disc = d1 * d1 - g1 * g2
    if disc < 0:
        return (lo + hi) / 2.0
    d2 = math.sqrt(disc)
    # Written from the left end point so the formula stays the same whichever order x1, x2 come in.
    if x1 <= x2:
        t = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2.0 * d2))
    else:
        t = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2.0 * d2))
    return min(max(t, lo), hi)


def _strong_wolfe(evaluate: Callable, t: float, d: np.ndarray, f: float, g: np.ndarray, gtd: float,
                  c1: float = 1e-4, c2: float = 0.9, tolerance_change: float = 1e-9, max_ls: int = 25):
    """Step length along ``d`` from the current point (loss ``f``, gradient ``g``, slope
    ``gtd = g.d < 0``) that satisfies the strong Wolfe conditions
        f(t) <= f + c1 t gtd   and   |f'(t)| <= c2 |gtd|,
    starting from the trial ``t``. ``evaluate(t)`` returns (loss, flat gradient) at x + t d
    without moving x. Returns (loss, gradient, t, evaluations)."""
    d_scale = float(np.abs(d).max())
    f_new, g_new = evaluate(t)
    evals = 1
    gtd_new = float(g_new @ d)
    t_prev, f_prev, g_prev, gtd_prev = 0.0, f, g, gtd
    done = False
    it = 0
    bracket = None
    # Phase 1: grow t until an interval is known to hold an acceptable point.
    while it < max_ls:
        if f_new > f + c1 * t * gtd or (it > 1 and f_new >= f_prev):
            bracket = [[t_prev, f_prev, g_prev, gtd_prev], [t, f_new, g_new, gtd_new]]
            break
        if abs(gtd_new) <= -c2 * gtd:
            bracket = [[t, f_new, g_new, gtd_new]]
            done = True
            break
        if gtd_new >= 0:
            bracket = [[t_prev, f_prev, g_prev, gtd_prev], [t, f_new, g_new, gtd_new]]
            break
        # Extrapolate: at least a little past t, at most ten times it.
        lo, hi = t + 0.01 * (t - t_prev), t * 10.0
        t_next = _cubic_min(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, bounds=(lo, hi))
        t_prev, f_prev, g_prev, gtd_prev = t, f_new, g_new, gtd_new
        t = t_next
        f_new, g_new = evaluate(t)
        evals += 1
        gtd_new = float(g_new @ d)
        it += 1
    if it == max_ls:
        bracket = [[0.0, f, g, gtd], [t, f_new, g_new, gtd_new]]

    # Phase 2: shrink the bracket; `low` is the end with the lower loss.
    stalled = False
    low, high = (0, 1) if len(bracket) == 1 or bracket[0][1] <= bracket[-1][1] else (1, 0)
    while not done and it < max_ls:
        if abs(bracket[1][0] - bracket[0][0]) * d_scale < tolerance_change:
            break
        (a, fa, _, ga), (b, fb, _, gb) = bracket
        t = _cubic_min(a, fa, ga, b, fb, gb)
        left, right = min(a, b), max(a, b)
        margin = 0.1 * (right - left)
        # A trial too close to an end point makes no progress; after two in a row (or one
        # outside the bracket) move it a margin inside.
        if min(right - t, t - left) < margin:
            if stalled or t >= right or t <= left:
                t = right - margin if abs(t - right) < abs(t - left) else left + margin
                stalled = False
            else:
                stalled = True
        else:
            stalled = False
        f_new, g_new = evaluate(t)
        evals += 1
        gtd_new = float(g_new @ d)
        it += 1
        if f_new > f + c1 * t * gtd or f_new >= bracket[low][1]:
            bracket[high] = [t, f_new, g_new, gtd_new]
            low, high = (0, 1) if bracket[0][1] <= bracket[1][1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True
            elif gtd_new * (bracket[high][0] - bracket[low][0]) >= 0:
                bracket[high] = bracket[low]
            bracket[low] = [t, f_new, g_new, gtd_new]
    t, f_new, g_new, _ = bracket[low]
    return f_new, g_new, t, evals


class LBFGS(Optimizer):
    """torch.optim.LBFGS: limited-memory BFGS over all parameters as one vector.

    ``step(closure)`` needs a closure that zeroes the gradients, computes the loss,
    calls ``backward()`` and returns the loss; it is called up to ``max_eval`` times
    per step. It returns the loss of the first evaluation, as torch.

    lr: step length (fixed, or the line search's first trial); max_iter: iterations per
    ``step``; max_eval: closure calls per ``step`` (default ``max_iter * 5 // 4``);
    tolerance_grad: stop when max |g| <= it; tolerance_change: stop when the step or the
    loss change falls below it; history_size: curvature pairs kept;
    line_search_fn: None or ``"strong_wolfe"``.
    State (``state["func_evals"]``, ``state["n_iter"]``, the history) persists between
    calls, so consecutive ``step`` calls continue one run.
    """

    def __init__(self, params, lr: float = 1, max_iter: int = 20, max_eval: int | None = None,
                 tolerance_grad: float = 1e-7, tolerance_change: float = 1e-9, history_size: int = 100,
                 line_search_fn: str | None = None):
        _check_lr(lr)
        if max_iter < 1:
            raise ValueError(f"max_iter: expected a positive integer, got {max_iter}")
        if max_eval is None:
            max_eval = max_iter * 5 // 4
        if history_size < 1:
            raise ValueError(f"history_size: expected a positive integer, got {history_size}")
        if line_search_fn not in (None, "strong_wolfe"):
            raise ValueError(f"line_search_fn: expected None or 'strong_wolfe', got {line_search_fn!r}")
        defaults = dict(lr=lr, max_iter=max_iter, max_eval=max_eval, tolerance_grad=tolerance_grad,
                        tolerance_change=tolerance_change, history_size=history_size,
                        line_search_fn=line_search_fn)
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError("LBFGS doesn't support per-parameter options (parameter groups)")
        self._params = self.param_groups[0]["params"]
        dtypes = {p.dtype for p in self._params}
        if len(dtypes) != 1:
            raise TypeError(f"LBFGS: all parameters must share one dtype, got {sorted(map(str, dtypes))}")

    # ---- the parameters as one flat vector --------------------------------------
    def _flat_grad(self) -> np.ndarray:
        parts = [np.zeros(p.numel(), p.dtype) if p.grad is None else np.asarray(p.grad._array).reshape(-1)
                 for p in self._params]
        return np.concatenate(parts).astype(self._params[0].dtype, copy=True)

    def _flat_params(self) -> np.ndarray:
        return np.concatenate([p._array.reshape(-1) for p in self._params]).copy()

    def _set_flat(self, flat: np.ndarray) -> None:
        offset = 0
        for p in self._params:
            n = p.numel()
            p._array[...] = flat[offset:offset + n].reshape(p.shape)
            offset += n

    def _add(self, t: float, d: np.ndarray) -> None:
        offset = 0
        for p in self._params:
            n = p.numel()
            if not (p._array.flags.c_contiguous and p._array.flags.writeable):
                p._array = np.ascontiguousarray(p._array).copy()
            p._array += (t * d[offset:offset + n]).reshape(p.shape).astype(p.dtype, copy=False)
            offset += n

    def step(self, closure: Callable | None = None):
        """Up to ``max_iter`` iterations; returns the loss ``closure`` gave at the start."""
        if closure is None:
            raise RuntimeError("LBFGS.step needs a closure that re-evaluates the loss")
        group = self.param_groups[0]
        lr, max_iter, max_eval = group["lr"], group["max_iter"], group["max_eval"]
        tol_grad, tol_change = group["tolerance_grad"], group["tolerance_change"]
        history_size, line_search = group["history_size"], group["line_search_fn"]

        def evaluate() -> float:
            with enable_grad():
                return float(closure())

        state = self.state[self._params[0]]
        state.setdefault("func_evals", 0)
        state.setdefault("n_iter", 0)

        with enable_grad():
            orig_loss = closure()
        loss = float(orig_loss)
        evals = 1
        state["func_evals"] += 1
        g = self._flat_grad()
        if np.abs(g).max() <= tol_grad:
            return orig_loss

        d, t = state.get("d"), state.get("t")
        old_s, old_y, rho = state.get("old_stps", []), state.get("old_dirs", []), state.get("ro", [])
        h_diag = state.get("H_diag", 1.0)
        g_prev, loss_prev = state.get("prev_flat_grad"), state.get("prev_loss")

        n_iter = 0
        while n_iter < max_iter:
            n_iter += 1
            state["n_iter"] += 1
            if state["n_iter"] == 1:
                d = -g
                old_s, old_y, rho = [], [], []
                h_diag = 1.0
            else:
                y = g - g_prev
                s = d * t
                ys = float(y @ s)
                # Keep a pair only when it has positive curvature, so the implied Hessian stays positive definite.
                if ys > 1e-10:
                    if len(old_y) == history_size:
                        old_s.pop(0), old_y.pop(0), rho.pop(0)
                    old_s.append(s)
                    old_y.append(y)
                    rho.append(1.0 / ys)
                    h_diag = ys / float(y @ y)
                # Two-loop recursion: d = -H g without forming H.
                q = -g
                alpha = [0.0] * len(old_y)
                for i in range(len(old_y) - 1, -1, -1):
                    alpha[i] = float(old_s[i] @ q) * rho[i]
                    q = q - alpha[i] * old_y[i]
                d = q * h_diag
                for i in range(len(old_y)):
                    beta = float(old_y[i] @ d) * rho[i]
                    d = d + old_s[i] * (alpha[i] - beta)
            g_prev = g.copy()
            loss_prev = loss

            t = min(1.0, 1.0 / float(np.abs(g).sum())) * lr if state["n_iter"] == 1 else lr
            gtd = float(g @ d)
            if gtd > -tol_change:
                break

            if line_search is not None:
                x0 = self._flat_params()

                def along(step_len: float):
                    self._set_flat(x0)
                    self._add(step_len, d)
                    f_t = evaluate()
                    g_t = self._flat_grad()
                    return f_t, g_t

                loss, g, t, ls_evals = _strong_wolfe(along, t, d, loss, g, gtd, tolerance_change=tol_change)
                self._set_flat(x0)
                self._add(t, d)
            else:
                self._add(t, d)
                ls_evals = 0
                # The last iteration skips the evaluation: the next step() starts with one anyway.
                if n_iter != max_iter:
                    loss = evaluate()
                    g = self._flat_grad()
                    ls_evals = 1
            evals += ls_evals
            state["func_evals"] += ls_evals

            if n_iter == max_iter or evals >= max_eval:
                break
            if np.abs(g).max() <= tol_grad:
                break
            if np.abs(d * t).max() <= tol_change or abs(loss - loss_prev) < tol_change:
                break

        state.update(d=d, t=t, old_dirs=old_y, old_stps=old_s, ro=rho, H_diag=h_diag,
                     prev_flat_grad=g_prev, prev_loss=loss_prev)
        return orig_loss

    def load_state_dict(self, state_dict: dict) -> None:
        """Restores the history; the vectors are flat (all parameters), so they are copied as they are."""
        import copy
        groups = state_dict["param_groups"]
        if len(groups) != 1 or len(groups[0]["params"]) != len(self._params):
            raise ValueError("loaded state dict does not match this LBFGS's parameters")
        merged = copy.deepcopy({k: v for k, v in groups[0].items() if k != "params"})
        merged["params"] = self._params
        self.param_groups = [merged]
        self.state.clear()
        saved = state_dict["state"].get(0, state_dict["state"].get("0"))
        if saved:
            self.state[self._params[0]] = copy.deepcopy(saved)
