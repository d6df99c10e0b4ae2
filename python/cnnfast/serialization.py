"""Checkpoints: ``cnnfast.save(obj, path)`` / ``cnnfast.load(path)``.

``obj`` is any nesting of dicts (any hashable keys of the kinds below), lists,
tuples, NumPy arrays, Tensors/Parameters, ints, floats, bools, strings and None:
model and optimizer state dicts, scheduler state, epoch counters, RNG state.

The format executes no code on load (no pickle): a JSON header describes the
object tree and where each array's raw bytes lie; arrays are stored as raw
little-endian-or-native buffers of plain numeric dtypes only.

    b"CNNFAST\\x01" | header length (uint64 LE) | header (UTF-8 JSON) | zero padding to 64
    | array bytes, each starting on a 64-byte boundary | SHA-256 of everything before it (32 bytes)

The last magic byte and the header's "version" both carry the format version
(FORMAT_VERSION); a file of another version is refused before anything in it is
interpreted. A truncated, extended or modified file fails the size or checksum test
with a clear ``CheckpointError`` (a ValueError). The checksum detects damage, not
forgery: someone who can write the file can recompute it, so the header is treated as
untrusted input anyway. Every array entry is checked (numeric dtype, non-negative
integer shape, byte count equal to the shape's, lying inside the payload) before any
array is created, and any malformed node is a ``CheckpointError``, never another
exception or an allocation sized by the header.

Saving to a path is atomic: the data go to a temporary file ``.<name>.<random>.tmp``
in the same directory, are flushed and fsync'ed, and then replace the target with
``os.replace`` (the directory is fsync'ed too), so a crash at any moment leaves either
the old file or the new one, never a mix. A temporary file left by a killed writer is
hidden, ends in ``.tmp`` and fails the size/checksum test if it is incomplete.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
import struct
import tempfile
from collections import Counter, OrderedDict
from typing import Any

import numpy as np

from . import _device
from .tensor import Tensor

__all__ = ["save", "load", "CheckpointError"]

MAGIC = b"CNNFAST\x01"
FORMAT_VERSION = 1
_ALIGN = 64
_DIGEST = 32


class CheckpointError(ValueError):
    """A file that is not a cnnfast checkpoint, or one that is truncated or corrupted."""


def _pad(n: int) -> int:
    return (-n) % _ALIGN


class _Encoder:
    def __init__(self):
        self.arrays: list[np.ndarray] = []
        self.offset = 0

    def array(self, a: np.ndarray, path: str) -> dict:
        if a.dtype.kind not in "biufc" or a.dtype.hasobject:
            raise TypeError(f"{path}: arrays of dtype {a.dtype} cannot be saved (numeric dtypes only)")
        if not a.flags.c_contiguous:  # (np.ascontiguousarray would also turn 0-d into 1-d)
            a = np.ascontiguousarray(a)
        entry = {"dtype": a.dtype.str, "shape": list(a.shape), "offset": self.offset, "nbytes": int(a.nbytes)}
        self.arrays.append(a)
        self.offset += a.nbytes + _pad(a.nbytes)
        return entry

    def encode(self, obj: Any, path: str = "obj"):
        from .nn.parameter import Parameter

        if obj is None or isinstance(obj, (bool, str)):
            return obj
        if isinstance(obj, int):
            return obj
        if isinstance(obj, float):
            return obj if math.isfinite(obj) else {"__type__": "float", "value": repr(obj)}
        if isinstance(obj, Tensor):
            kind = "parameter" if isinstance(obj, Parameter) else "tensor"
            # a device tensor is saved as host data; load gives CPU tensors (move them with .to)
            return {"__type__": kind, "array": self.array(_device.host(obj._array), path),
                    "requires_grad": bool(obj.requires_grad)}
        if isinstance(obj, _device.DeviceArray):  # optimizer state of device parameters
            return {"__type__": "ndarray", "array": self.array(obj.get(), path)}
        if isinstance(obj, np.ndarray):
            return {"__type__": "ndarray", "array": self.array(obj, path)}
        if isinstance(obj, np.generic):
            return {"__type__": "scalar", "array": self.array(np.asarray(obj), path)}
        if isinstance(obj, (dict, OrderedDict, Counter)):
            kind = "counter" if isinstance(obj, Counter) else "odict" if isinstance(obj, OrderedDict) else "dict"
            items = [[self.encode(k, f"{path} key {k!r}"), self.encode(v, f"{path}[{k!r}]")] for k, v in obj.items()]
            return {"__type__": kind, "items": items}
        if isinstance(obj, (list, tuple)):
            kind = "list" if isinstance(obj, list) else "tuple"
            return {"__type__": kind, "items": [self.encode(v, f"{path}[{i}]") for i, v in enumerate(obj)]}
        raise TypeError(f"{path}: objects of type {type(obj).__name__} cannot be saved; use dicts, lists, tuples, "
                        "arrays, Tensors, ints, floats, bools, strings or None")


def _serialize(obj) -> tuple[bytes, list[np.ndarray]]:
    enc = _Encoder()
    tree = enc.encode(obj)
    header = {"format": "cnnfast-checkpoint", "version": FORMAT_VERSION, "payload_size": enc.offset, "object": tree}
    return json.dumps(header, separators=(",", ":"), allow_nan=False).encode("utf-8"), enc.arrays


def _write(f, header: bytes, arrays: list[np.ndarray]) -> None:
    h = hashlib.sha256()

    def put(b) -> None:
        h.update(b)
        f.write(b)

    prefix = MAGIC + struct.pack("<Q", len(header)) + header
    put(prefix)
    put(b"\0" * _pad(len(prefix)))
    for a in arrays:
        put(memoryview(a).cast("B") if a.size else b"")
        put(b"\0" * _pad(a.nbytes))
    f.write(h.digest())


_TORCH_SAVE_ARGS = {"pickle_module", "pickle_protocol", "_use_new_zipfile_serialization", "_disable_byteorder_record"}


def save(obj, f, **torch_args) -> None:
    """Writes ``obj`` to ``f`` (a path, written atomically, or a binary file object).
    torch.save's pickle options are accepted and have no effect (nothing is pickled).
    A ``.pt``/``.pth`` name warns that the file is cnnfast's format, which torch.load
    cannot read.

    Raises TypeError naming the offending entry if ``obj`` holds an unsupported type."""
    unknown = set(torch_args) - _TORCH_SAVE_ARGS
    if unknown:
        raise TypeError(f"save() got unexpected keyword arguments {sorted(unknown)}")
    name = getattr(f, "name", f) if not isinstance(f, (str, os.PathLike)) else f
    if isinstance(name, (str, os.PathLike)) and os.fspath(name).lower().endswith((".pt", ".pth", ".tar")):
        warnings.warn(f"{os.fspath(name)}: cnnfast.save writes cnnfast's own pickle-free checkpoint format, not "
                      "torch's, whatever the file name; read it back with cnnfast.load (torch.load cannot)",
                      UserWarning, stacklevel=2)
    header, arrays = _serialize(obj)
    if hasattr(f, "write"):
        _write(f, header, arrays)
        return
    path = os.fspath(f)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as out:
            _write(out, header, arrays)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    # Persist the rename itself (the directory entry); not possible on every platform.
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


class _Decoder:
    def __init__(self, payload: memoryview, name: str):
        self.payload = payload
        self.name = name

    def fail(self, msg: str):
        raise CheckpointError(f"{self.name}: corrupted checkpoint: {msg}")

    def array(self, e) -> np.ndarray:
        if not isinstance(e, dict) or not {"dtype", "shape", "offset", "nbytes"} <= set(e):
            self.fail("malformed array entry")
        if not isinstance(e["dtype"], str) or len(e["dtype"]) > 8:
            self.fail(f"malformed dtype {str(e['dtype'])[:40]!r}")
        try:
            dt = np.dtype(e["dtype"])
        except (TypeError, ValueError):
            self.fail(f"unknown dtype {e['dtype']!r}")
        if dt.kind not in "biufc" or dt.hasobject or dt.fields is not None or dt.subdtype is not None:
            self.fail(f"dtype {dt} is not allowed (plain numeric dtypes only)")
        shape, off, nbytes = e["shape"], e["offset"], e["nbytes"]
        # bool is an int subclass: refuse it too, so that only true integers pass.
        ints = [v for v in (shape if isinstance(shape, list) else [None]) + [off, nbytes]]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in ints) or len(shape) > 64:
            self.fail(f"malformed array entry (shape {str(shape)[:80]}, offset {off!r}, {nbytes!r} bytes)")
        shape = tuple(shape)
        count = math.prod(shape)  # exact (Python integers): a wrapped-around product cannot sneak through
        if nbytes != count * dt.itemsize or off + nbytes > len(self.payload):
            self.fail(f"array entry (offset {off}, {nbytes} bytes, shape {shape}, {dt}) does not fit the "
                      f"{len(self.payload)}-byte payload")
        return np.frombuffer(self.payload, dtype=dt, count=count, offset=off).reshape(shape).copy()

    def decode(self, node):
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if not isinstance(node, dict) or "__type__" not in node:
            self.fail(f"unexpected node {str(node)[:80]}")
        kind = node["__type__"]
        if kind == "float":
            if node.get("value") not in ("nan", "inf", "-inf"):
                self.fail(f"malformed float node {str(node)[:80]}")
            return float(node["value"])
        if kind in ("tensor", "parameter"):
            data = self.array(node["array"])
            if kind == "parameter":
                from .nn.parameter import Parameter

                return Parameter(data, requires_grad=bool(node.get("requires_grad", True)))
            t = Tensor(data)
            if node.get("requires_grad") and data.dtype.kind == "f":
                t.requires_grad_(True)
            return t
        if kind == "ndarray":
            return self.array(node["array"])
        if kind == "scalar":
            return self.array(node["array"])[()]
        if kind in ("dict", "odict", "counter"):
            out = {"dict": dict, "odict": OrderedDict, "counter": Counter}[kind]()
            for k, v in node["items"]:
                key = self.decode(k)
                out[tuple(key) if isinstance(key, list) else key] = self.decode(v)
            return out
        if kind == "list":
            return [self.decode(v) for v in node["items"]]
        if kind == "tuple":
            return tuple(self.decode(v) for v in node["items"])
        self.fail(f"unknown node type {kind!r}")


def load(f, map_location=None, weights_only: bool = True):
    """Reads a checkpoint written by ``save``. ``f``: a path or a binary file object.
    ``map_location`` and ``weights_only`` are accepted for torch compatibility (loading
    never runs code, so it is always "weights only").

    Raises ``CheckpointError`` (a ValueError) for a file that is not a checkpoint, is
    truncated, or whose checksum does not match."""
    if hasattr(f, "read"):
        data, name = f.read(), getattr(f, "name", "<file>")
    else:
        name = os.fspath(f)
        with open(name, "rb") as fh:
            data = fh.read()
    name = str(name)
    if data[:len(MAGIC) - 1] != MAGIC[:-1]:
        hint = " (it looks like a pickle; cnnfast never unpickles)" if data[:1] == b"\x80" else \
            (" (a zip archive, e.g. a torch.save file; cnnfast never unpickles. Load a torch state dict into a "
             "model with cnnfast.utils.load_torch_state_dict(model, torch.load(path, weights_only=True)), or convert "
             "it once with "
             "python -c \"import torch, cnnfast; cnnfast.save({k: v.numpy() for k, v in "
             "torch.load('in.pt', weights_only=True).items()}, 'out.cnnfast')\")") if data[:2] == b"PK" else ""
        raise CheckpointError(f"{name}: not a cnnfast checkpoint (bad magic bytes){hint}")
    if len(data) < len(MAGIC) + 8:
        raise CheckpointError(f"{name}: checkpoint is truncated ({len(data)} bytes)")
    version = data[len(MAGIC) - 1]
    if version != FORMAT_VERSION:
        newer = " (written by a newer cnnfast)" if version > FORMAT_VERSION else ""
        raise CheckpointError(f"{name}: unsupported checkpoint format version {version}{newer}; this cnnfast "
                              f"reads version {FORMAT_VERSION}")
    (hlen,) = struct.unpack_from("<Q", data, len(MAGIC))
    start = len(MAGIC) + 8
    if start + hlen + _DIGEST > len(data):
        raise CheckpointError(f"{name}: checkpoint is truncated ({len(data)} bytes; the header alone needs "
                              f"{start + hlen + _DIGEST})")
    try:
        header = json.loads(bytes(data[start:start + hlen]).decode("utf-8"))
        payload_size = header["payload_size"]
        if not isinstance(payload_size, int) or isinstance(payload_size, bool) or payload_size < 0:
            raise ValueError(f"payload_size {str(payload_size)[:40]!r} is not a byte count")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError) as exc:
        raise CheckpointError(f"{name}: corrupted checkpoint: unreadable header ({str(exc)[:200]})") from None
    pstart = start + hlen + _pad(start + hlen)
    expected = pstart + payload_size + _DIGEST
    if len(data) != expected:
        kind = "truncated" if len(data) < expected else "longer than its header says"
        raise CheckpointError(f"{name}: checkpoint is {kind}: expected {expected} bytes, got {len(data)}")
    if hashlib.sha256(memoryview(data)[:-_DIGEST]).digest() != bytes(data[-_DIGEST:]):
        raise CheckpointError(f"{name}: corrupted checkpoint: SHA-256 checksum mismatch")
    if header.get("format") != "cnnfast-checkpoint" or header.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{name}: unsupported checkpoint format {str(header.get('format'))[:40]!r} "
                              f"version {str(header.get('version'))[:20]}; this cnnfast reads cnnfast-checkpoint "
                              f"version {FORMAT_VERSION}")
    if "object" not in header:
        raise CheckpointError(f"{name}: corrupted checkpoint: the header has no object")
    payload = memoryview(data)[pstart:pstart + payload_size]
    try:
        return _Decoder(payload, name).decode(header["object"])
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RecursionError, OverflowError) as exc:
        raise CheckpointError(f"{name}: corrupted checkpoint: malformed header ({type(exc).__name__}: "
                              f"{str(exc)[:200]})") from None
