"""Property-based tests over every cnnfast._C entry point (issue 10).

For each entry point hypothesis draws a valid call (fuzz_specs.py) and then one way
to break it: a non-contiguous, read-only, misaligned, byte-swapped, wrongly typed,
zero-size, wrongly shaped or listed array; an output or state buffer that aliases
an input (exactly or shifted by one element); an extreme int (0, -1, 2**62,
2**63-1, -2**63, 2**64), float (nan, inf, -1, 1e308) or string; an out-of-range
index. Every call must then either give the right answer or raise
ValueError/TypeError/MemoryError whose message names the argument:

* every example's unbroken call runs first: it must succeed, agree between the
  scalar and AVX2 paths, and agree with the NumPy/PyTorch reference (every kernel
  has one, fuzz_specs.py or fuzz_refs.py, except box_iou_pairs_backward, whose
  gradient tests/test_detection.py checks by finite differences); only then is the
  drawn break applied;
* a break that keeps the values (non-contiguous, read-only input, misaligned,
  byte-swapped, list, in-place or shifted aliasing) must give the unbroken answer
  or an error naming the broken argument;
* a break that changes the meaning (dtype, shape, index, None, a string) must be an
  error naming the argument;
* extreme scalars may be accepted (then scalar and AVX2 must agree) or refused with
  an error naming an argument; a zero-size array may be accepted only with results
  that agree between scalar and AVX2 and with the reference wherever the reference
  itself accepts the empty input; nothing may crash, hang or raise anything else.

Budget: CNNFAST_FUZZ_EXAMPLES examples per entry point (default 12, fixed seed via
derandomize, so CI always runs the same cases); a longer run:
    CNNFAST_FUZZ_EXAMPLES=500 python -m pytest -q tests/test_fuzz_kernels.py
"""
import os
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cnnfast
import cnnfast._C as C
from fuzz_specs import SPECS, Case, entry_points, observed
from helpers import assert_close

EXAMPLES = int(os.environ.get("CNNFAST_FUZZ_EXAMPLES", "12"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
ERRORS = (ValueError, TypeError, MemoryError)
SIMD = cnnfast.simd_levels()  # every level this CPU runs, scalar first

INT_EXTREMES = [-1, 0, -(2**31), -(2**63), 2**62, 2**63 - 1, 2**64]
FLOAT_EXTREMES = [float("nan"), float("inf"), float("-inf"), -1.0, 0.0, 1e308, -1e308]
STR_BAD = ["", "bogus", "MEAN", "none ", "auto\x00", "x" * 300]
INDEX_BAD = [-1, -(2**63), 2**62, 2**63 - 1]

# Breaks that keep every value: the call must give the unbroken answer or name the argument.
SAME_OR_ERROR = {"noncontig", "readonly_in", "misaligned", "byteswap", "as_list", "alias_same", "alias_shift",
                 "alias_state"}
# Breaks that change the meaning: an error naming the argument is the only right answer.
MUST_ERROR = {"wrong_dtype", "wrong_shape", "bad_index", "not_array", "readonly_out", "str_bad"}
# Extreme values and empty arrays: refused with a named error, or accepted consistently.
ERROR_OR_CONSISTENT = {"int_extreme", "float_extreme", "zero_size", "none_value"}
# Breaks whose error must name the broken argument itself (for a shape or an
# extreme value, naming the argument it disagrees with is as good).
NAME_THE_BROKEN = {"noncontig", "misaligned", "byteswap", "wrong_dtype", "not_array", "readonly_in", "readonly_out",
                   "bad_index", "alias_same", "alias_shift", "alias_state"}


def test_every_entry_point_has_a_fuzz_strategy():
    """A kernel added to cnnfast._C without a builder in fuzz_specs.SPECS fails here."""
    missing = [n for n in entry_points() if n not in SPECS]
    assert not missing, f"entry points without a fuzz strategy in tests/fuzz_specs.py: {missing}"
    stale = [n for n in SPECS if n not in entry_points()]
    assert not stale, f"fuzz strategies for entry points that no longer exist: {stale}"


# ---- breaking one argument ----------------------------------------------------


def arg_names(case: Case) -> set:
    first = (getattr(C, case.fn).__doc__ or "").splitlines()[0] if getattr(C, case.fn).__doc__ else ""
    return set(case.args) | set(re.findall(r"(\w+):", first)) | {"output", "out"}


def noncontig(a):
    if a.size < 2:
        return None
    big = np.empty(a.shape[:-1] + (a.shape[-1] * 2,), a.dtype) if a.ndim else None
    if a.ndim and a.shape[-1] > 1:
        big[..., ::2] = a
        return big[..., ::2]
    return np.asfortranarray(a) if sum(s > 1 for s in a.shape) > 1 else None


def misaligned(a):
    """A view of a's values at an odd byte address (numpy.frombuffer with offset=1)."""
    buf = np.zeros(a.nbytes + 1, np.uint8)
    buf[1:] = np.frombuffer(np.ascontiguousarray(a).tobytes(), np.uint8)
    return np.frombuffer(buf.data, dtype=a.dtype, count=a.size, offset=1).reshape(a.shape)


def byteswapped(a):
    return a.astype(a.dtype.newbyteorder(">" if a.dtype.byteorder in "=<" else "<"))


def wrong_dtype(draw, a):
    if a.dtype.kind == "f":
        return a.astype(draw(st.sampled_from([np.int32, np.float16, np.complex64, np.bool_, np.int64])))
    return a.astype(draw(st.sampled_from([np.int32, np.float64, np.uint64, np.int8])))


def wrong_shape(draw, rng, a, tied_dims=None):
    """a's shape with one of its first ``tied_dims`` dimensions (default all) grown by one,
    perhaps with a leading 2."""
    if a.ndim == 0:
        return rng.standard_normal((2,)).astype(a.dtype)
    shape = list(a.shape)
    i = draw(st.integers(0, min(a.ndim, tied_dims or a.ndim) - 1))
    shape[i] += 1
    if draw(st.booleans()):
        shape.insert(0, 2)
    out = rng.standard_normal(shape)
    return out.astype(a.dtype) if a.dtype.kind == "f" else np.zeros(shape, a.dtype)


def zero_size(draw, a):
    shape = list(a.shape) if a.ndim else [1]
    shape[draw(st.integers(0, len(shape) - 1))] = 0
    return np.zeros(shape, a.dtype)


def shifted_alias(a, base):
    """A writable array of a's shape whose memory starts one element after base's."""
    buf = np.zeros(base.size + 1 + a.size, a.dtype)
    buf[: base.size] = base.reshape(-1)
    return buf[: base.size].reshape(base.shape), buf[1: 1 + a.size].reshape(a.shape)


def mutate_int(draw, v):
    if isinstance(v, (list, tuple)):
        if not v or draw(st.integers(0, 4)) == 0:
            return list(v) + [1] if draw(st.booleans()) else []
        v = list(v)
        i = draw(st.integers(0, len(v) - 1))
        v[i] = mutate_int(draw, v[i])
        return v
    return draw(st.sampled_from(INT_EXTREMES))


def candidate_breaks(case: Case) -> list:
    a = case.args
    arrays = [k for k in dict.fromkeys(case.reads + case.writes + ((case.out,) if case.out else ()))
              if isinstance(a.get(k), np.ndarray)]
    out = [("none", None)]
    for k in arrays:
        written = k in case.writes or k == case.out
        out += [("noncontig", k), ("misaligned", k), ("byteswap", k), ("wrong_dtype", k), ("as_list", k),
                ("zero_size", k), ("none_value", k), ("not_array", k),
                ("readonly_out" if written else "readonly_in", k)]
        if k in case.tied:
            out.append(("wrong_shape", k))
    if case.out and isinstance(a.get(case.out), np.ndarray):
        for k in case.reads:
            if isinstance(a.get(k), np.ndarray):
                out += [("alias_same", (case.out, k)), ("alias_shift", (case.out, k))]
    written = [k for k in case.writes if isinstance(a.get(k), np.ndarray)]
    for i, w in enumerate(written):
        for r in written[:i] + [k for k in case.reads if isinstance(a.get(k), np.ndarray)]:
            if a[r].shape == a[w].shape or r in case.reads:
                out.append(("alias_state", (w, r)))
    if case.notes.get("indices") and isinstance(a.get(case.notes["indices"]), np.ndarray):
        out.append(("bad_index", case.notes["indices"]))
    out += [("int_extreme", k) for k in case.ints]
    out += [("float_extreme", k) for k in case.floats]
    out += [("str_bad", k) for k in case.strs]
    return out


def apply_break(draw, case: Case, kind: str, target):
    """Returns (args, names the error must mention) or None when this break does not apply."""
    args = dict(case.args)
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    if kind == "none":
        return args, None
    if kind.startswith("alias"):
        w, r = target
        if kind == "alias_same" or (kind == "alias_state" and args[w].shape == args[r].shape
                                    and args[w].dtype == args[r].dtype and draw(st.booleans())):
            if args[w].shape != args[r].shape or args[w].dtype != args[r].dtype:
                return None
            args[r] = args[r].copy()
            args[w] = args[r]
        else:
            if args[w].dtype != args[r].dtype or min(args[w].size, args[r].size) < 2:
                return None
            args[r], args[w] = shifted_alias(args[w], args[r])
        return args, {w, r}
    if kind in ("int_extreme", "float_extreme", "str_bad"):
        v = args[target]
        if kind == "int_extreme":
            args[target] = mutate_int(draw, v)
        elif kind == "float_extreme":
            args[target] = draw(st.sampled_from(FLOAT_EXTREMES))
        else:
            args[target] = draw(st.sampled_from(STR_BAD))
        return args, None
    a = args[target]
    if kind == "noncontig":
        b = noncontig(a)
        if b is None:
            return None
        b[...] = a
        args[target] = b
    elif kind == "misaligned":
        if a.itemsize == 1 or a.size == 0:
            return None
        args[target] = misaligned(a)
    elif kind == "byteswap":
        args[target] = byteswapped(a)
    elif kind == "wrong_dtype":
        args[target] = wrong_dtype(draw, a)
    elif kind == "as_list":
        args[target] = a.tolist()
    elif kind == "zero_size":
        args[target] = zero_size(draw, a)
    elif kind == "none_value":
        args[target] = None
    elif kind == "not_array":
        args[target] = draw(st.sampled_from(["abc", object(), 3 + 4j]))
    elif kind in ("readonly_in", "readonly_out"):
        b = a.copy()
        b.flags.writeable = False
        args[target] = b
    elif kind == "wrong_shape":
        args[target] = wrong_shape(draw, rng, a, case.notes.get("tied_dims"))
    elif kind == "bad_index":
        b = a.copy()
        b.reshape(-1)[draw(st.integers(0, b.size - 1))] = draw(st.sampled_from(INDEX_BAD))
        args[target] = b
    return args, {target}


# ---- running and judging --------------------------------------------------------


def run(case: Case, args: dict, simd: str):
    before_simd, before_threads = C.simd_level(), C.get_num_threads()
    C.set_simd_level(simd)
    try:
        res = getattr(C, case.fn)(**args)
        return observed(case, res, args)
    finally:
        C.set_simd_level(before_simd)
        C.set_num_threads(before_threads)


def fresh(case: Case, args: dict) -> dict:
    return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in args.items()}


def same(case: Case, got: list, want: list, what: str):
    assert len(got) == len(want), f"{what}: {len(got)} results vs {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        if w is None or g is None:
            assert g is None and w is None, f"{what}[{i}]: None vs array"
            continue
        assert g.shape == w.shape, f"{what}[{i}]: shape {g.shape} vs {w.shape}"
        if g.dtype.kind not in "fc":
            np.testing.assert_array_equal(g, w, err_msg=f"{what}[{i}]")
        else:
            assert_close(g, w, rtol=case.rtol, atol=case.atol, what=f"{what}[{i}]")


def assert_named(case: Case, err: Exception, names, kind: str):
    msg = str(err)
    if isinstance(err, TypeError) and "incompatible function arguments" in msg:
        return  # pybind11's own refusal lists the whole signature
    wanted = names if names and kind in NAME_THE_BROKEN else arg_names(case)
    assert any(re.search(rf"\b{re.escape(n)}\b", msg) for n in wanted), (
        f"{case.fn} [{kind}]: {type(err).__name__} does not name {sorted(wanted)}: {msg!r}")


def check_against_reference(case: Case, args: dict, got: list, what: str):
    want = case.ref(fresh(case, args))
    for i, w in enumerate(want):
        if w is not None:
            same(case, [got[i]], [np.asarray(w)], f"{case.fn}: {what} vs reference, output {i}")


def check_unbroken(case: Case):
    """The call as drawn: runs, scalar == AVX2, and equals the reference."""
    args = case.args
    if case.notes.get("process_wide"):
        return
    if case.notes.get("measurement"):
        assert C.fma_peak_gflops(**args) > 0
        return
    if case.notes.get("setting"):
        run(case, args, SIMD[-1])
        if case.fn == "set_num_threads":
            before = C.get_num_threads()
            C.set_num_threads(args["n"])
            assert C.get_num_threads() == args["n"]
            C.set_num_threads(before)
        if case.fn == "set_workspace_cache_limit":
            assert C.workspace_stats()["cache_limit"] == args["bytes"]
            C.set_workspace_cache_limit(DEFAULT_WORKSPACE_CACHE)
        return
    results = [run(case, fresh(case, args), s) for s in SIMD]
    for r in results[1:]:
        same(case, r, results[0], f"{case.fn}: avx2 vs scalar")
    assert case.ref is not None or case.fn in NO_REFERENCE, f"{case.fn}: no reference in fuzz_specs/fuzz_refs"
    if case.ref is not None:
        check_against_reference(case, args, results[-1], "unbroken")


# Kernels whose fuzz case lacks an independent answer, always or for some draws; their own
# test file checks them (tests/test_detection.py: finite differences for the gradient,
# torchvision's formulas for the DIoU/CIoU values).
DEFAULT_WORKSPACE_CACHE = C.workspace_stats()["cache_limit"]

NO_REFERENCE = {"box_iou_pairs_backward", "box_iou_forward", "box_iou_pairs_forward"}


def check_break(case: Case, kind: str, target, args: dict, names):
    if case.notes.get("setting") or case.notes.get("measurement"):
        # Settings take only ints/strings: a break is judged by the error alone.
        try:
            run(case, fresh(case, args), SIMD[-1])
        except ERRORS as err:
            assert_named(case, err, names, kind)
        finally:
            if case.fn == "set_workspace_cache_limit":  # an accepted extreme must not outlive the case
                C.set_workspace_cache_limit(DEFAULT_WORKSPACE_CACHE)
        return
    # Aliasing keeps the values the arrays hold before the call, not the spec's:
    # the right answer is the one separate copies of them give.
    clean_args = args if kind.startswith("alias") else case.args
    clean = run(case, fresh(case, clean_args), SIMD[-1]) if kind in SAME_OR_ERROR else None
    # In-place kernels change their arguments: runs that are compared get copies,
    # except where the copy would remove the break itself (layout, aliasing).
    try:
        got = run(case, fresh(case, args) if kind in ERROR_OR_CONSISTENT else args, SIMD[-1])
    except ERRORS as err:
        assert_named(case, err, names, kind)
        return
    if kind in MUST_ERROR:
        pytest.fail(f"{case.fn}: break {kind} of {target!r} was accepted (result {got!r:.200})")
    if kind in SAME_OR_ERROR:
        same(case, got, clean, f"{case.fn}: {kind} of {target!r}")
    elif kind in ERROR_OR_CONSISTENT:
        if len(SIMD) > 1:
            other = run(case, fresh(case, args), SIMD[0])
            same(case, got, other, f"{case.fn}: {kind} of {target!r}, scalar vs avx2")
        if kind == "zero_size" and case.ref is not None:
            try:
                want_ok = True
                case.ref(fresh(case, args))
            except Exception:  # the reference refuses the empty input: nothing to compare with
                want_ok = False
            if want_ok:
                check_against_reference(case, args, got, f"zero-size {target!r}")


@pytest.mark.parametrize("name", sorted(SPECS))
@FUZZ
@given(data=st.data())
def test_fuzz_entry_point(name, data):
    case = SPECS[name](data.draw)
    check_unbroken(case)
    kind, target = data.draw(st.sampled_from(candidate_breaks(case)), label="break")
    applied = apply_break(data.draw, case, kind, target)
    if applied is None or kind == "none":
        return
    args, names = applied
    check_break(case, kind, target, args, names)
