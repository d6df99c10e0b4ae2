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


# Lengths that leave every possible tail after 8- and 16-lane bodies, plus primes
# that span several full vectors.
TAIL_LENGTHS = list(range(1, 32)) + [61, 127, 257]


def vector_levels():
    """The SIMD levels above scalar this CPU (and build) can run."""
    import cnnfast
    return [lvl for lvl in cnnfast.simd_levels() if lvl != "scalar"]


def at_level(level, fn, *args, **kwargs):
    """fn(*args, **kwargs) run at one SIMD level, restoring the previous level."""
    import cnnfast
    before = cnnfast.simd_level()
    cnnfast.set_simd_level(level)
    try:
        return fn(*args, **kwargs)
    finally:
        cnnfast.set_simd_level(before)
