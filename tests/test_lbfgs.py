"""cnnfast.optim.LBFGS against torch.optim.LBFGS: same iterates on deterministic problems
(Rosenbrock, a multi-tensor quadratic), with and without the strong-Wolfe line search."""
import numpy as np
import pytest
import torch

import cnnfast
from cnnfast.optim import LBFGS

from helpers import assert_close


def _rosenbrock(x):
    a = x[1:] - x[:-1] * x[:-1]
    b = 1 - x[:-1]
    return (a * a * 100 + b * b).sum()


def _pair(x0, **kw):
    xt = torch.tensor(x0.copy(), requires_grad=True)
    xc = cnnfast.tensor(x0.copy(), requires_grad=True)
    ot, oc = torch.optim.LBFGS([xt], **kw), LBFGS([xc], **kw)

    def ct():
        ot.zero_grad()
        loss = _rosenbrock(xt)
        loss.backward()
        return loss

    def cc():
        oc.zero_grad()
        loss = _rosenbrock(xc)
        loss.backward()
        return loss

    return xt, xc, ot, oc, ct, cc


@pytest.mark.parametrize("line_search_fn,lr,history_size", [(None, 0.1, 5), ("strong_wolfe", 1.0, 5),
                                                             ("strong_wolfe", 1.0, 2), (None, 0.05, 100)])
def test_rosenbrock_iterates_match_torch(line_search_fn, lr, history_size):
    x0 = np.array([-1.2, 1.0, -0.5, 0.8, 1.3, 0.1, -0.7], dtype=np.float64)
    xt, xc, ot, oc, ct, cc = _pair(x0, lr=lr, max_iter=7, history_size=history_size, line_search_fn=line_search_fn)
    for k in range(6):
        lt, lc = ot.step(ct), oc.step(cc)
        assert_close(float(lc), float(lt.detach()), rtol=1e-9, atol=1e-12, what=f"loss at step {k}")
        assert_close(xc.detach().numpy(), xt.detach().numpy(), rtol=1e-8, atol=1e-10, what=f"x after step {k}")
        assert oc.state[xc]["func_evals"] == ot.state[xt]["func_evals"]
        assert oc.state[xc]["n_iter"] == ot.state[xt]["n_iter"]
    assert not np.allclose(xc.detach().numpy(), x0)


def test_strong_wolfe_reaches_the_minimum():
    x0 = np.array([-1.2, 1.0, -0.5, 0.8, 1.3], dtype=np.float64)
    _, xc, _, oc, _, cc = _pair(x0, lr=1, max_iter=200, line_search_fn="strong_wolfe")
    oc.step(cc)
    assert_close(xc.detach().numpy(), np.ones(5), atol=1e-5, rtol=0, what="Rosenbrock minimiser")


def test_quadratic_over_several_tensors_matches_torch():
    rng = np.random.default_rng(3)
    m = rng.standard_normal((7, 7))
    A = m @ m.T + 7 * np.eye(7)
    b = rng.standard_normal(7)
    w0, v0 = rng.standard_normal((2, 2)), rng.standard_normal(3)

    def make(lib, tensor):
        w = tensor(w0.copy(), requires_grad=True)
        v = tensor(v0.copy(), requires_grad=True)
        At, bt = tensor(A), tensor(b)
        opt = (torch.optim.LBFGS if lib == "torch" else LBFGS)([w, v], lr=1, max_iter=4,
                                                                line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            x = lib_cat(lib, w, v)
            loss = (x @ (At @ x)) * 0.5 - (bt * x).sum()
            loss.backward()
            return loss

        return w, v, opt, closure

    def lib_cat(lib, w, v):
        return torch.cat([w.reshape(-1), v]) if lib == "torch" else cnnfast.cat([w.reshape(-1), v])

    wt, vt, ot, ct = make("torch", torch.tensor)
    wc, vc, oc, cc = make("cnnfast", cnnfast.tensor)
    for k in range(5):
        ot.step(ct)
        oc.step(cc)
        assert_close(wc.detach().numpy(), wt.detach().numpy(), rtol=1e-8, atol=1e-10, what=f"w step {k}")
        assert_close(vc.detach().numpy(), vt.detach().numpy(), rtol=1e-8, atol=1e-10, what=f"v step {k}")
    x = np.concatenate([wc.detach().numpy().reshape(-1), vc.detach().numpy()])
    assert_close(x, np.linalg.solve(A, b), atol=1e-5, rtol=0, what="quadratic minimiser")


def test_float32_parameters_stay_float32_and_converge():
    x = cnnfast.tensor(np.array([3.0, -2.0], np.float32), requires_grad=True)
    opt = LBFGS([x], line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = ((x - 1.5) * (x - 1.5)).sum()
        loss.backward()
        return loss

    opt.step(closure)
    assert x.dtype == np.float32
    assert_close(x.detach().numpy(), [1.5, 1.5], atol=1e-4, rtol=0)


def test_stops_at_once_when_the_gradient_is_zero():
    x = cnnfast.tensor(np.ones(3), requires_grad=True)
    opt = LBFGS([x])
    calls = []

    def closure():
        calls.append(1)
        opt.zero_grad()
        loss = ((x - 1.0) * (x - 1.0)).sum()
        loss.backward()
        return loss

    opt.step(closure)
    assert len(calls) == 1
    assert_close(x.detach().numpy(), np.ones(3))


def test_state_dict_round_trip_continues_the_run():
    x0 = np.array([-1.2, 1.0, 0.4], dtype=np.float64)
    _, xa, _, oa, _, ca = _pair(x0, lr=1, max_iter=3, history_size=4, line_search_fn="strong_wolfe")
    for _ in range(4):
        oa.step(ca)

    _, xb, _, ob, _, cb = _pair(x0, lr=1, max_iter=3, history_size=4, line_search_fn="strong_wolfe")
    for _ in range(2):
        ob.step(cb)
    saved = ob.state_dict()
    xc = cnnfast.tensor(xb.detach().numpy().copy(), requires_grad=True)
    oc = LBFGS([xc], lr=0.5, max_iter=3, history_size=4, line_search_fn="strong_wolfe")
    oc.load_state_dict(saved)
    assert oc.param_groups[0]["lr"] == 1

    def closure():
        oc.zero_grad()
        loss = _rosenbrock(xc)
        loss.backward()
        return loss

    for _ in range(2):
        oc.step(closure)
    assert_close(xc.detach().numpy(), xa.detach().numpy(), rtol=1e-12, atol=1e-14, what="resumed run")


def test_bad_arguments():
    x = cnnfast.tensor(np.ones(2), requires_grad=True)
    with pytest.raises(ValueError, match="line_search_fn"):
        LBFGS([x], line_search_fn="backtracking")
    with pytest.raises(ValueError, match="max_iter"):
        LBFGS([x], max_iter=0)
    with pytest.raises(ValueError, match="learning rate"):
        LBFGS([x], lr=-1)
    with pytest.raises(ValueError, match="history_size"):
        LBFGS([x], history_size=0)
    y = cnnfast.tensor(np.ones(2), requires_grad=True)
    with pytest.raises(ValueError, match="parameter groups"):
        LBFGS([{"params": [x]}, {"params": [y]}])
    with pytest.raises(RuntimeError, match="closure"):
        LBFGS([x]).step()
    with pytest.raises(TypeError, match="dtype"):
        LBFGS([x, cnnfast.tensor(np.ones(2, np.float32), requires_grad=True)])
