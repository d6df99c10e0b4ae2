"""Reference helpers for kernel tests: tolerance checks and float64 finite differences."""
import numpy as np


def assert_close(actual, expected, rtol=1e-5, atol=1e-6, what=""):
    """|actual - expected| <= atol + rtol * |expected| elementwise, NaN only where expected is NaN."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    nan_a, nan_e = np.isnan(actual), np.isnan(expected)
    assert np.array_equal(nan_a, nan_e), f"{what}: NaN pattern differs"
    inf_e = np.isinf(expected)
    assert np.array_equal(actual[inf_e], expected[inf_e]), f"{what}: infinities differ"
    ok = ~nan_e & ~inf_e
    err = np.abs(actual[ok] - expected[ok])
    bound = atol + rtol * np.abs(expected[ok])
    if err.size and not np.all(err <= bound):
        worst = int(np.argmax(err - bound))
        raise AssertionError(
            f"{what}: max error {err.max():.3e}; worst element {actual[ok][worst]!r} vs {expected[ok][worst]!r} "
            f"(bound {bound[worst]:.3e})"
        )


def numerical_grad(f, inputs, grad_output, eps=1e-6):
    """Gradient of sum(f(*inputs) * grad_output) w.r.t. each float64 input, by central differences.

    f takes and returns float64 arrays; inputs are perturbed in place and restored.
    """
    grads = []
    for x in inputs:
        g = np.zeros_like(x)
        flat, gflat = x.reshape(-1), g.reshape(-1)
        for i in range(flat.size):
            old = flat[i]
            flat[i] = old + eps
            plus = np.sum(f(*inputs) * grad_output)
            flat[i] = old - eps
            minus = np.sum(f(*inputs) * grad_output)
            flat[i] = old
            gflat[i] = (plus - minus) / (2 * eps)
        grads.append(g)
    return grads


def assert_nontrivial(*arrays):
    """A gradient check comparing zero with zero tests nothing: insist on signal."""
    for a in arrays:
        assert np.count_nonzero(np.asarray(a)) > 0, "reference is all zeros: the check would pass vacuously"
