"""Hostile and damaged inputs: checkpoints truncated at every stage, single flipped bytes
anywhere in the file, other format versions, crafted headers with valid checksums
(malformed nodes, forbidden dtypes, huge declared sizes), pickles and torch.save files
whose loading would run code, state dicts of the wrong shapes/dtypes/keys (the model must
stay unchanged), .npz files with object arrays or lying headers, disguised images, and a
writer SIGKILLed in the middle of a save.

Loading never runs code: every pickle here has a ``__reduce__`` that would create a marker
file, and each test checks that the marker was never created (and that plain pickle
would have created it, so the check can fail)."""
import hashlib
import io
import json
import os
import pathlib
import pickle
import signal
import struct
import subprocess
import sys
import textwrap
import time
import tracemalloc
import zipfile

import numpy as np
import pytest

import cnnfast
from cnnfast import nn
from cnnfast.cli import main as cli_main
from cnnfast.data import DataError, load_data, load_image_folder, load_npz
from cnnfast.serialization import FORMAT_VERSION, MAGIC, CheckpointError
from cnnfast.training.checkpoint import load_checkpoint, save_checkpoint


class Evil:
    """Unpickling this creates ``marker``: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def _env():
    return dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))


def craft(header, payload: bytes = b"", version: int = FORMAT_VERSION) -> bytes:
    """A file in the checkpoint layout with a valid checksum around an arbitrary header
    (a dict, or JSON text): what someone who can write the file (and so recompute the
    SHA-256) can produce."""
    hb = (header if isinstance(header, str) else json.dumps(header)).encode()
    prefix = MAGIC[:-1] + bytes([version]) + struct.pack("<Q", len(hb)) + hb
    body = prefix + b"\0" * (-len(prefix) % 64) + payload
    return body + hashlib.sha256(body).digest()


def header(obj, payload_size=0, **kw):
    return {"format": "cnnfast-checkpoint", "version": FORMAT_VERSION, "payload_size": payload_size, "object": obj,
            **kw}


def arr(dtype="<f4", shape=(2,), offset=0, nbytes=8):
    return {"__type__": "ndarray", "array": {"dtype": dtype, "shape": list(shape) if isinstance(shape, tuple)
                                             else shape, "offset": offset, "nbytes": nbytes}}


@pytest.fixture
def good(tmp_path):
    path = tmp_path / "good.cnf"
    cnnfast.save({"w": np.arange(40, dtype=np.float32), "b": np.ones(3), "meta": {"epoch": 2, "name": "run"}}, path)
    return path


# ---- damaged files ----------------------------------------------------------------------

def test_crafted_helper_matches_the_real_format(good):
    """The crafted layout is the real one (so the crafted-header tests test load itself)."""
    back = cnnfast.load(io.BytesIO(craft(header(arr(), 64), np.ones(2, np.float32).tobytes() + b"\0" * 56)))
    np.testing.assert_array_equal(back, np.ones(2, np.float32))


def test_truncated_at_every_stage(good):
    data = good.read_bytes()
    hlen = struct.unpack_from("<Q", data, 8)[0]
    header_end = 16 + hlen
    payload_start = header_end + (-header_end % 64)
    cuts = {"empty": 0, "inside magic": 3, "inside header length": 11, "inside header": 16 + hlen // 2,
            "end of header": header_end, "start of payload": payload_start, "inside payload": payload_start + 50,
            "no digest": len(data) - 32, "half digest": len(data) - 16, "last byte": len(data) - 1}
    for what, cut in cuts.items():
        good.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="truncated|not a cnnfast checkpoint") as e:
            cnnfast.load(good)
        assert str(good) in str(e.value), what


def test_every_single_flipped_byte_is_detected(good):
    """Each byte of the file (magic, length, header, padding, payload, digest), flipped in
    its lowest and highest bit: every variant is refused with a CheckpointError."""
    data = good.read_bytes()
    for pos in range(len(data)):
        for mask in (0x01, 0x80):
            bad = bytearray(data)
            bad[pos] ^= mask
            with pytest.raises(CheckpointError):
                cnnfast.load(io.BytesIO(bytes(bad)))


def test_flipped_payload_and_header_bytes_name_the_checksum(good):
    data = good.read_bytes()
    hlen = struct.unpack_from("<Q", data, 8)[0]
    text = data[16:16 + hlen]
    for where in (len(data) - 40, len(data) - 100):  # payload bytes
        bad = bytearray(data)
        bad[where] ^= 0x04
        with pytest.raises(CheckpointError, match="SHA-256 checksum mismatch"):
            cnnfast.load(io.BytesIO(bytes(bad)))
    # A header byte changed so that the JSON stays valid and sizes still match: only the
    # checksum can tell ("epoch":2 -> "epoch":3).
    i = text.index(b'"epoch"')
    j = 16 + i + text[i:].index(b"2")
    bad = bytearray(data)
    bad[j] = ord("3")
    with pytest.raises(CheckpointError, match="SHA-256 checksum mismatch"):
        cnnfast.load(io.BytesIO(bytes(bad)))


@pytest.mark.parametrize("version", [0, 2, 255])
def test_other_format_versions_are_refused(good, version):
    data = bytearray(good.read_bytes())
    data[7] = version  # the version byte of the magic, checked before anything else is read
    with pytest.raises(CheckpointError, match=f"unsupported checkpoint format version {version}"):
        cnnfast.load(io.BytesIO(bytes(data)))
    if version > FORMAT_VERSION:
        with pytest.raises(CheckpointError, match="newer cnnfast"):
            cnnfast.load(io.BytesIO(bytes(data)))


def test_header_version_and_format_are_checked():
    with pytest.raises(CheckpointError, match="unsupported checkpoint format 'cnnfast-checkpoint' version 2"):
        cnnfast.load(io.BytesIO(craft({**header(None), "version": 2})))
    with pytest.raises(CheckpointError, match="unsupported checkpoint format 'other'"):
        cnnfast.load(io.BytesIO(craft({**header(None), "format": "other"})))


def test_training_checkpoint_format_version_is_checked(tmp_path):
    path = tmp_path / "t.ckpt"
    cnnfast.save({"format": "cnnfast-train-2", "model": {}, "trainer": {}}, path)
    with pytest.raises(ValueError, match="unsupported training checkpoint version 'cnnfast-train-2'"):
        load_checkpoint(str(path))
    cnnfast.save({"format": "cnnfast-train-1", "model": {"w": "text"}, "trainer": {}}, path)
    with pytest.raises(ValueError, match="model entry 'w' is not a numeric array"):
        load_checkpoint(str(path))
    cnnfast.save({"some": "dict"}, path)
    with pytest.raises(ValueError, match="not a cnnfast training checkpoint"):
        load_checkpoint(str(path))


BAD_HEADERS = {
    "object dtype": header(arr(dtype="|O", nbytes=16), 64),
    "unicode dtype": header(arr(dtype="<U1", nbytes=8), 64),
    "void dtype": header(arr(dtype="|V4", nbytes=8), 64),
    "structured dtype": header(arr(dtype="f4,f4", nbytes=16), 64),
    "dtype not a string": header(arr(dtype=12), 64),
    "unknown dtype": header(arr(dtype="<q9"), 64),
    "negative size": header(arr(shape=[-2], nbytes=8), 64),
    "float size": header(arr(shape=[2.0]), 64),
    "bool size": header(arr(shape=[True, True]), 64),
    "shape not a list": header(arr(shape="22"), 64),
    "negative offset": header(arr(offset=-8), 64),
    "bytes do not match the shape": header(arr(nbytes=4), 64),
    "array beyond the payload": header(arr(offset=60), 64),
    "int64-wrapping shape": header(arr(shape=[2 ** 32, 2 ** 32], nbytes=0), 64),
    "missing array fields": header({"__type__": "ndarray", "array": {"dtype": "<f4"}}, 64),
    "unknown node type": header({"__type__": "function", "name": "os.system"}),
    "float node with code": header({"__type__": "float", "value": "__import__('os')"}),
    "dict items not pairs": header({"__type__": "dict", "items": [[1, 2, 3]]}),
    "unhashable key": header({"__type__": "dict", "items": [[{"__type__": "dict", "items": []}, 1]]}),
    "node without type": header({"a": 1}),
    "no object": {"format": "cnnfast-checkpoint", "version": FORMAT_VERSION, "payload_size": 0},
    "negative payload size": header(None, -64),
    "payload size as text": header(None, "64"),
    "header not an object": [1, 2, 3],
}


@pytest.mark.parametrize("name", list(BAD_HEADERS))
def test_crafted_headers_with_valid_checksums_are_refused(name):
    h = BAD_HEADERS[name]
    size = h.get("payload_size", 0) if isinstance(h, dict) else 0
    payload = b"\0" * size if isinstance(size, int) and size > 0 else b""
    with pytest.raises(CheckpointError):
        cnnfast.load(io.BytesIO(craft(h, payload)))


def test_deeply_nested_header_is_refused():
    n = 100_000
    text = json.dumps(header("NODE")).replace('"NODE"', '{"__type__":"list","items":[' * n + "null" + "]}" * n)
    with pytest.raises(CheckpointError, match="unreadable header"):
        cnnfast.load(io.BytesIO(craft(text)))


@pytest.mark.parametrize("what", ["array shape", "header length", "payload size"])
def test_huge_declared_sizes_are_refused_before_allocating(what):
    """Sizes from the header are checked against the bytes actually present before any
    array is created: loading allocates (tracemalloc, which sees NumPy's allocations) no
    more than a few times the file's size."""
    if what == "array shape":
        data = craft(header(arr(shape=[10 ** 6, 10 ** 6], nbytes=4 * 10 ** 12), 64), b"\0" * 64)
        match = "does not fit"
    elif what == "payload size":
        data = craft(header(None, 10 ** 15))
        match = "truncated"
    else:
        data = bytearray(craft(header(None)))
        data[8:16] = struct.pack("<Q", 2 ** 63)
        data = bytes(data)
        match = "truncated"
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match=match):
            cnnfast.load(io.BytesIO(data))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, peak


# ---- files whose loading would run code ---------------------------------------------------

def test_a_pickle_is_refused_without_unpickling(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps({"model": Evil(marker)}))
    with pytest.raises(CheckpointError, match="not a cnnfast checkpoint.*looks like a pickle"):
        cnnfast.load(path)
    with pytest.raises(CheckpointError):
        load_checkpoint(str(path))
    assert cli_main(["eval", str(path)]) == 2
    assert not marker.exists()
    pickle.loads(path.read_bytes())  # the control: plain pickle runs the payload
    assert marker.exists()


def test_a_torch_save_file_is_refused_without_unpickling(tmp_path):
    torch = pytest.importorskip("torch")
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pt"
    torch.save({"model": Evil(marker)}, path)
    with pytest.raises(CheckpointError, match="zip archive, e.g. a torch.save file"):
        cnnfast.load(path)
    assert not marker.exists()


def test_load_never_calls_pickle(good, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("unpickling attempted")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, boom)
    monkeypatch.setattr(np, "load", boom)
    assert cnnfast.load(good)["meta"] == {"epoch": 2, "name": "run"}


# ---- state dicts that do not fit: the model must stay exactly as it was ------------------

def _model():
    cnnfast.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 3))


def _snapshot(m):
    return {k: v._array.copy() for k, v in m.state_dict().items()}


def _assert_unchanged(m, before):
    after = _snapshot(m)
    assert list(after) == list(before)
    for k in before:
        assert after[k].dtype == before[k].dtype
        np.testing.assert_array_equal(after[k], before[k], err_msg=k)


def _other_state(m):
    """A complete, valid state dict with different values (so a partial load would show)."""
    return {k: np.full_like(v, 7) for k, v in _snapshot(m).items()}


BAD_STATES = {
    "wrong shape (last key)": (True, lambda s: s.update({"3.bias": np.zeros(4, np.float32)})),
    "wrong shape (non-strict)": (False, lambda s: s.update({"3.bias": np.zeros(4, np.float32)})),
    "missing key": (True, lambda s: s.pop("3.weight")),
    "extra key": (True, lambda s: s.update({"4.weight": np.zeros(3, np.float32)})),
    "string dtype": (True, lambda s: s.update({"3.bias": np.array(["a", "b", "c"])})),
    "string dtype (non-strict)": (False, lambda s: s.update({"3.bias": np.array(["a", "b", "c"])})),
    "complex dtype": (True, lambda s: s.update({"3.bias": np.ones(3, np.complex64)})),
    "object dtype": (True, lambda s: s.update({"3.bias": np.array([1, None, 2], dtype=object)})),
    "wrong dtype buffer": (True, lambda s: s.update({"1.num_batches_tracked": np.array("7")})),
    "not an array": (True, lambda s: s.update({"3.bias": {"a": 1}})),
}


@pytest.mark.parametrize("name", list(BAD_STATES))
def test_failed_load_state_dict_leaves_the_model_unchanged(name):
    strict, spoil = BAD_STATES[name]
    m = _model()
    before = _snapshot(m)
    state = _other_state(m)
    spoil(state)
    with pytest.raises((RuntimeError, TypeError), match="state_dict|mismatch|Missing|Unexpected"):
        m.load_state_dict(state, strict=strict)
    _assert_unchanged(m, before)


def test_non_strict_load_reports_missing_and_extra_keys():
    m = _model()
    state = _other_state(m)
    state.pop("3.weight")
    state["extra"] = np.zeros(1)
    missing, unexpected = m.load_state_dict(state, strict=False)
    assert missing == ["3.weight"] and unexpected == ["extra"]
    assert (m[3].bias._array == 7).all() and not (m[3].weight._array == 7).all()


def test_loading_a_checkpoint_for_another_architecture_changes_nothing(tmp_path):
    path = str(tmp_path / "other.ckpt")
    other = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 5))
    save_checkpoint(path, other, {"epoch": 0})
    m = _model()
    before = _snapshot(m)
    weights, _ = load_checkpoint(path)
    with pytest.raises(RuntimeError, match=r"size mismatch for 3.weight.*\n.*size mismatch for 3.bias"):
        m.load_state_dict(weights)
    _assert_unchanged(m, before)


def test_checkpoints_with_non_finite_weights_are_never_written(tmp_path, good):
    path = tmp_path / "good.cnf"  # the fixture's file: it must survive
    m = _model()
    m[3].weight._array[0, 0] = np.nan
    with pytest.raises(FloatingPointError, match="3.weight holds NaN or Inf"):
        save_checkpoint(str(path), m, {"epoch": 1})
    assert cnnfast.load(path)["meta"]["epoch"] == 2
    assert sorted(os.listdir(tmp_path)) == ["good.cnf"]


def test_cli_refuses_a_tampered_checkpoint(tmp_path, capsys):
    path = str(tmp_path / "m.ckpt")
    save_checkpoint(path, _model(), {"epoch": 0})
    data = bytearray(open(path, "rb").read())
    data[-100] ^= 1
    open(path, "wb").write(bytes(data))
    assert cli_main(["eval", path]) == 2
    assert "SHA-256 checksum mismatch" in capsys.readouterr().err
    assert cli_main(["train", "--resume", path, "--quiet"]) == 2
    assert "SHA-256 checksum mismatch" in capsys.readouterr().err


# ---- data files ---------------------------------------------------------------------------

def _npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def test_npz_with_object_arrays_is_refused_without_unpickling(tmp_path):
    marker = tmp_path / "code-ran"
    x = np.empty(2, dtype=object)
    x[0], x[1] = Evil(marker), Evil(marker)
    path = _npz(tmp_path / "evil.npz", x=x, y=np.zeros(2, np.int64))
    with pytest.raises(DataError, match="array 'x' holds Python objects.*refused"):
        load_npz(path)
    with pytest.raises(DataError):
        load_data(path)
    assert not marker.exists()
    np.load(path, allow_pickle=True)["x"]  # the control: NumPy with pickles allowed runs the payload
    assert marker.exists()


def test_a_pickle_named_npz_is_refused(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.npz"
    path.write_bytes(pickle.dumps(Evil(marker)))
    with pytest.raises(DataError, match="not a readable .npz file: a pickle"):
        load_npz(str(path))
    assert not marker.exists()


def _npy_bytes(shape, dtype="<f4", data=b""):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue() + data


@pytest.mark.parametrize("member", ["x.npy", "x"])
def test_npz_with_a_lying_header_is_refused_before_allocating(tmp_path, member):
    """A member that claims 10^12 floats but stores 16 bytes: refused from the zip directory
    alone; NumPy would otherwise try to allocate 4 TB first."""
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(member, _npy_bytes((10 ** 6, 10 ** 6), data=b"\0" * 16))
        z.writestr("y.npy", _npy_bytes((2,), "<i8", np.zeros(2, np.int64).tobytes()))
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"array 'x' declares shape \(1000000, 1000000\)"):
            load_npz(str(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, peak


def test_npz_with_a_short_member_is_refused(tmp_path):
    path = tmp_path / "short.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.npy", _npy_bytes((2, 4, 4), data=b"\0" * 8))
        z.writestr("y.npy", _npy_bytes((2,), "<i8", np.zeros(2, np.int64).tobytes()))
    with pytest.raises(DataError, match="declares shape"):
        load_npz(str(path))


def test_valid_npz_still_loads(tmp_path):
    path = _npz(tmp_path / "ok.npz", x=np.zeros((4, 6, 6), np.uint8), y=np.array([0, 1, 0, 1]))
    d = load_npz(path)
    assert d.x.shape == (4, 1, 6, 6) and d.classes == ["0", "1"]


def _folder(tmp_path, n=2, size=6):
    from PIL import Image

    root = tmp_path / "imgs"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((size, size), 40 * i, np.uint8)).save(root / c / f"{i}.png")
    return root


def test_image_decoders_are_limited_to_the_listed_formats(tmp_path, monkeypatch):
    """An EPS file named .png (Pillow's EPS decoder runs Ghostscript) is refused without the
    EPS plugin ever being asked to open it."""
    from PIL import EpsImagePlugin, Image

    marker = tmp_path / "eps-opened"

    def spy(self):
        marker.touch()
        raise SyntaxError("not a real EPS")

    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", spy)
    root = _folder(tmp_path)
    evil = root / "a" / "9.png"
    evil.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 6 6\n")
    with pytest.raises(DataError, match="9.png: cannot read the image as PNG/JPEG"):
        load_image_folder(str(root))
    assert not marker.exists()
    with pytest.raises(Exception):
        Image.open(evil)  # the control: without the format list, Pillow hands it to the EPS plugin
    assert marker.exists()


@pytest.mark.parametrize("limit", [10, 20])  # 36-pixel images: over 2x the limit (error), over 1x (warning)
def test_decompression_bombs_are_refused(tmp_path, monkeypatch, limit):
    from PIL import Image

    root = _folder(tmp_path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    with pytest.raises(DataError, match="refused: .*pixels"):
        load_image_folder(str(root))


# ---- a writer killed in the middle of a save ------------------------------------------------

KILLED_WRITER = textwrap.dedent("""
    import os, sys, time
    import numpy as np
    import cnnfast, cnnfast.serialization as S

    path, pause_in = sys.argv[1], int(sys.argv[2])
    real = S._write
    gen = 0

    class Paused:
        # Writes in 1 MB pieces; in generation pause_in, stops after 4 MB (on disk, fsync'ed)
        # and tells the parent, which then SIGKILLs this process.
        def __init__(self, f):
            self.f, self.n = f, 0

        def write(self, b):
            b = memoryview(b).cast("B")
            for i in range(0, len(b), 1 << 20):
                self.f.write(b[i:i + (1 << 20)])
                self.n += len(b[i:i + (1 << 20)])
                if gen == pause_in and self.n > 4 << 20:
                    self.f.flush()
                    os.fsync(self.f.fileno())
                    print("MID", flush=True)
                    time.sleep(600)

    if pause_in:
        S._write = lambda f, header, arrays: real(Paused(f), header, arrays)
    for gen in range(1, 10 ** 6):
        cnnfast.save({"gen": gen, "w": np.full(2_000_000, gen, np.float32)}, path)  # 8 MB
        print("SAVED", gen, flush=True)
""")


def _check_survivor(folder, path, gen=None):
    back = cnnfast.load(path)  # checksum verified
    assert (back["w"] == back["gen"]).all() and back["w"].shape == (2_000_000,)
    if gen is not None:
        assert back["gen"] == gen
    others = [f for f in os.listdir(folder) if f != os.path.basename(path)]
    for name in others:  # leftovers of the killed writer: hidden, .tmp, and never loadable as complete
        assert name.startswith(".") and name.endswith(".tmp"), name
    visible = [f for f in os.listdir(folder) if not f.startswith(".")]
    assert visible == [os.path.basename(path)]
    return others


def test_sigkill_mid_write_keeps_the_old_checkpoint(tmp_path):
    path = str(tmp_path / "big.ckpt")
    p = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, path, "3"], stdout=subprocess.PIPE, env=_env())
    try:
        lines = []
        for line in p.stdout:
            lines.append(line.decode().strip())
            if lines[-1] == "MID":
                break
        assert lines == ["SAVED 1", "SAVED 2", "MID"], lines
        os.kill(p.pid, signal.SIGKILL)
    finally:
        p.kill()
        p.wait()
    assert p.returncode == -signal.SIGKILL
    leftovers = _check_survivor(tmp_path, path, gen=2)
    assert len(leftovers) == 1  # the half-written generation 3
    partial = tmp_path / leftovers[0]
    assert 4 << 20 < partial.stat().st_size < 8 << 20
    with pytest.raises(CheckpointError, match="truncated"):
        cnnfast.load(partial)
    cnnfast.save({"gen": 4, "w": np.full(2_000_000, 4, np.float32)}, path)  # the next save is unaffected
    assert cnnfast.load(path)["gen"] == 4


def test_sigkill_at_arbitrary_moments_of_a_save_loop(tmp_path):
    """No pause hook: kill a writer saving in a tight loop at a few arbitrary moments; the
    file is always a complete, checksum-valid checkpoint of some generation."""
    path = str(tmp_path / "big.ckpt")
    rng = np.random.default_rng(0)
    for round_ in range(2):
        p = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, path, "0"], stdout=subprocess.PIPE, env=_env())
        try:
            first = p.stdout.readline().decode().strip()
            assert first.startswith("SAVED"), first
            time.sleep(float(rng.uniform(0.01, 0.2)))
            os.kill(p.pid, signal.SIGKILL)
        finally:
            p.kill()
            p.wait()
        _check_survivor(tmp_path, path)


def test_predict_refuses_a_disguised_image(tmp_path, capsys):
    from dataclasses import asdict

    from cnnfast.training import TrainConfig
    from cnnfast.training.trainer import build_model

    cnnfast.manual_seed(0)
    path = str(tmp_path / "m.ckpt")
    save_checkpoint(path, build_model("lenet5", 10, (1, 32, 32)), {
        "config": asdict(TrainConfig()), "classes": [str(i) for i in range(10)], "image_shape": [1, 32, 32],
        "norm": {"mean": np.zeros(1), "std": np.ones(1)}})
    evil = tmp_path / "photo.png"
    evil.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 6 6\n")
    assert cli_main(["predict", path, str(evil)]) == 2
    assert "photo.png: cannot read the image as PNG/JPEG" in capsys.readouterr().err
    from PIL import Image

    Image.fromarray(np.zeros((9, 9), np.uint8)).save(evil)  # a real PNG under the same name works
    assert cli_main(["predict", path, str(evil)]) == 0
