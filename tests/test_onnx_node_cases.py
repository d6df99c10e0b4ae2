"""ONNX's own node test cases (generated from the installed onnx package's
``onnx.backend.test.case.node`` modules; the wheel ships no data files) for every op
cnnfast.onnx claims to import. Models above opset 20 are converted down with ONNX's
version converter; a case the converter cannot convert is not a cnnfast result and is
listed as such. Every other case must either load and match ONNX's expected outputs, or
be refused at load with an UnsupportedOnnxError naming the op and node. The refusals are
listed in README.md ("ONNX import: refused node cases"); REFUSED below must equal the set
observed, so a fix or a regression both show up here."""
import io
import warnings
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

import cnnfast  # noqa: E402
import cnnfast.onnx as co  # noqa: E402
from cnnfast.onnx import UnsupportedOnnxError  # noqa: E402

# Random ops: ONNX's expected values come from NumPy's generator, so only shapes and the
# kept/dropped pattern can be compared.
RANDOM = {"test_training_dropout", "test_training_dropout_default", "test_training_dropout_mask",
          "test_training_dropout_default_mask"}


def _cases():
    import onnx.backend.test.case.node as node_cases
    with warnings.catch_warnings(), redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        cases = node_cases.collect_testcases(None)
    claimed = set(co.supported_ops()) - {"Constant", "If"}
    out = []
    for c in cases:
        ops = {nd.op_type for nd in c.model.graph.node}
        # Function-expanded variants ("_expanded") test ONNX's decompositions, not the op.
        if len(ops) == 1 and ops <= claimed and not c.name.endswith("_expanded") and c.kind == "node":
            out.append((ops.pop(), c))
    return sorted(out, key=lambda oc: oc[1].name)


def _to_supported_opset(model):
    op = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=20)
    if co.MIN_OPSET <= op <= co.MAX_OPSET:
        return model
    from onnx import version_converter
    return version_converter.convert_version(model, min(max(op, co.MIN_OPSET), co.MAX_OPSET))


def _array(v):
    return onnx.numpy_helper.to_array(v) if isinstance(v, onnx.TensorProto) else np.asarray(v)


def _run_case(case):
    """'pass', 'refused: <message>', 'unconvertible' or raises AssertionError on a mismatch."""
    try:
        model = _to_supported_opset(case.model)
    except Exception:  # noqa: BLE001 - the converter's own limits, not cnnfast's
        return "unconvertible"
    try:
        m = co.load(model.SerializeToString())
    except UnsupportedOnnxError as e:
        return f"refused: {e}"
    inputs, expected = case.data_sets[0]
    inputs, expected = [_array(a) for a in inputs], [_array(e) for e in expected]
    if case.name in ORT_NOT_REFERENCE:
        import onnxruntime as ort
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        expected = sess.run(None, {i.name: a for i, a in zip(sess.get_inputs(), inputs)})
    args = [cnnfast.tensor(a) if a.dtype.kind == "f" else a for a in inputs]
    with cnnfast.no_grad():
        got = m(*args)
    got = got if isinstance(got, tuple) else (got,)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        g = g.numpy() if hasattr(g, "numpy") else np.asarray(g)
        assert g.shape == np.asarray(e).shape, (g.shape, np.asarray(e).shape)
        if case.name in RANDOM:
            continue
        rtol = max(case.rtol, 1e-4) if e.dtype.kind == "f" else 0
        atol = max(case.atol, 1e-5) if e.dtype.kind == "f" else 0
        np.testing.assert_allclose(g, e, rtol=rtol, atol=atol)
    return "pass"


CASES = _cases()

# Where ONNX's generated expectation disagrees with the spec text, onnxruntime and PyTorch's
# exporter, cnnfast follows the latter three and the case is checked against onnxruntime:
# MaxUnpool with output_shape: indices address the pooled input (of output_shape), as the
# spec says and torch's MaxPool/MaxUnpool export relies on; ONNX's case computes them in the
# default-shaped plane.
ORT_NOT_REFERENCE = {"test_maxunpool_export_with_output_shape"}

# Refused at load (named op, node and reason); README lists them.
REFUSED = {f"test_cast_{sat}{src}_to_FLOAT8{dst}" for sat in ("", "no_saturate_") for src in ("FLOAT", "FLOAT16")
           for dst in ("E4M3FN", "E4M3FNUZ", "E5M2", "E5M2FNUZ")}  # casts to float8 (saturation rules)


def test_counts():
    """Most claimed cases pass; the ones ONNX's converter cannot bring to opsets 13-20 are few."""
    results = [_run_case(c) for _, c in CASES]
    assert sum(r == "pass" for r in results) >= 470
    assert sum(r == "unconvertible" for r in results) <= 45


@pytest.mark.parametrize("op,case", CASES, ids=[c.name for _, c in CASES])
def test_node_case(op, case):
    result = _run_case(case)
    if result.startswith("refused"):
        assert "ONNX op" in result or "input" in result, result
        assert case.name in REFUSED, f"newly refused: {result}"
    else:
        assert case.name not in REFUSED, "now passes: remove it from REFUSED and README"
