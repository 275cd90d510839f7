"""Reading pickled checkpoints (.pth, .bin) without running anything from the file.

``torch.load(weights_only=True)`` is the first choice: it refuses any object but tensors and plain
containers, and with ``mmap=True`` a 5 GB training checkpoint costs only the tensors that are used.
A training checkpoint, though, often holds other objects (a Lightning callback, an optimizer's state,
hyper-parameters as an OmegaConf object) that it refuses, and then the whole file would be unreadable.

``SafeReader`` reads such a file anyway: its ``SafeUnpickler`` resolves no name from the file except the
few that rebuild tensors (replaced by our own functions, which build ``LazyTensor``s) and plain dicts;
any other name the pickle asks for (``os.system``, ``builtins.eval``, a callback class...) becomes an inert
``Opaque`` subclass, so "calling" it only records the arguments. Tensors are read from the file's
storage records when ``materialize``d, so the parts of the file nobody uses are never read.

Both the zip format (torch >= 1.6) and the legacy format are read. Truncated or damaged files raise
``CheckpointError`` naming the file; a tensor record that does not describe a tensor of its storage (an
offset, size or stride that is not a non-negative integer, a size and stride of different lengths, more
elements than the storage holds: a hand-made or corrupted record) raises ``CheckpointError`` naming the file
and the tensor's key when the tensor is looked at, never torch's own ``TypeError``/``RuntimeError``. When
``torch.load`` fails on such a record, the file is read again with ``SafeReader`` so that the error can name it.
"""

from __future__ import annotations

import dataclasses
import io
import os
import pickle
import struct
import zipfile
from pathlib import Path

import torch

from .checkpoint import CheckpointError
from .os_errors import not_a_file


class Opaque:
    """Stands for any object of a pickle other than a tensor: records what the file asked for, runs nothing."""

    target = "?"

    def __new__(cls, *args, **kwargs):
        self = object.__new__(cls)
        self.args, self.state = args, None
        return self

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.state = state

    def append(self, item):  # pickle's APPEND(S) and SETITEM(S) on an object: kept, never interpreted
        self.state = item

    def extend(self, items):
        self.state = items

    def __setitem__(self, key, value):
        self.state = value

    def __repr__(self):
        return f"<not loaded: {self.target}>"


@dataclasses.dataclass
class StorageRef:
    """A tensor storage of the file, not yet read: its record key, element type and length."""

    key: str
    dtype: torch.dtype
    numel: int

    def __setstate__(self, state):  # a file may not BUILD into our own objects
        raise pickle.UnpicklingError("refusing to set the state of a storage")


def _naturals(v) -> bool:
    return isinstance(v, tuple) and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v)


def record_problem(storage, offset, size, stride) -> str | None:
    """What is wrong with a tensor record (storage, offset, size, stride) of a pickle, or None."""
    if not isinstance(storage, StorageRef):
        return f"its storage is a {type(storage).__name__}, not a storage record of the file"
    if not _naturals((offset,)) or not _naturals(size) or not _naturals(stride):
        return (f"a malformed tensor record (offset {offset!r:.40}, size {size!r:.60}, stride {stride!r:.60}): each "
                "must be non-negative integers")
    if len(size) != len(stride):
        return f"a malformed tensor record: size {size} and stride {stride} have different lengths"
    needed = offset + sum((n - 1) * st for n, st in zip(size, stride)) + 1 if all(size) else 0
    if needed > storage.numel:
        return (f"the tensor record needs {needed:,} elements of storage {storage.key}, which holds "
                f"{storage.numel:,}: the file is damaged")
    return None


@dataclasses.dataclass
class LazyTensor:
    """A tensor of the file, read only if kept (so 5 GB of training state costs only what is used). ``name``
    is its key in the file's dict, once known; ``problem`` says what is wrong with its record, if anything."""

    storage: StorageRef
    offset: int
    size: tuple
    stride: tuple
    reader: object = None
    name: str = "?"
    problem: str | None = None

    def __setstate__(self, state):  # a file may not BUILD into our own objects
        raise pickle.UnpicklingError("refusing to set the state of a tensor")

    def _check(self):
        if self.problem:
            raise CheckpointError(f"{self.reader.path}: tensor {self.name!r}: {self.problem}")

    @property
    def shape(self):
        self._check()
        return torch.Size(self.size)

    @property
    def dtype(self):
        self._check()
        return self.storage.dtype

    def load(self) -> torch.Tensor:
        self._check()
        flat = self.reader.storage(self.storage, self.name)
        return torch.as_strided(flat, self.size, self.stride, self.offset).clone()


STORAGE_DTYPES = {"FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
                  "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
                  "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
                  "BoolStorage": torch.bool, "UntypedStorage": torch.uint8}


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that cannot run code: ``find_class`` resolves only the functions that rebuild tensors
    (replaced by our own, which build ``LazyTensor``s) and plain dicts; every other name in the file
    (``os.system``, ``builtins.eval``, a Lightning callback class...) becomes an inert ``Opaque`` subclass,
    so calling it just records the arguments. Storages become ``StorageRef``s read later, on demand."""

    def __init__(self, file, reader):
        super().__init__(file)
        self.reader = reader

    def find_class(self, module, name):
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return self._rebuild_tensor
        if module == "torch._utils" and name in ("_rebuild_parameter", "_rebuild_parameter_with_state"):
            return lambda data, *args: data
        if module == "torch._tensor" and name == "_rebuild_from_type_v2":  # (func, type, args, state)
            return lambda func, new_type, args, state: func(*args)  # func: one of ours or an Opaque
        if module == "collections" and name == "OrderedDict":
            return dict
        if module == "torch" and name in STORAGE_DTYPES:
            return STORAGE_DTYPES[name]
        return type(f"Opaque_{name}", (Opaque,), {"target": f"{module}.{name}"})

    def persistent_load(self, pid):
        # zip format: ('storage', type, key, location, numel); legacy: (..., view_metadata)
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[1], torch.dtype)
                and _naturals((pid[4],))) or (len(pid) > 5 and pid[5] is not None):
            raise pickle.UnpicklingError(f"unsupported persistent id {str(pid)[:80]}")
        ref = StorageRef(str(pid[2]), pid[1], int(pid[4]))
        self.reader.refs.setdefault(ref.key, ref)
        return ref

    def _rebuild_tensor(self, storage, offset, size, stride, *rest):
        if not isinstance(storage, StorageRef):
            return Opaque(storage)
        size, stride = (tuple(v) if isinstance(v, (tuple, list)) else v for v in (size, stride))
        return LazyTensor(storage, offset, size, stride, self.reader,
                          problem=record_problem(storage, offset, size, stride))


class SafeReader:
    """Reads a torch.save file (zip or the legacy pre-1.6 format) with ``SafeUnpickler``."""

    def __init__(self, path):
        self.path = Path(path)
        self._zip = self._legacy_offsets = None
        self.refs = {}  # storage key -> StorageRef, as the pickle names them

    def load(self):
        if zipfile.is_zipfile(self.path):
            self._zip = zipfile.ZipFile(self.path)
            names = self._zip.namelist()
            pkl = min((n for n in names if n.endswith("data.pkl")), key=len, default=None)
            if pkl is None:
                raise CheckpointError(f"{self.path}: a zip file without data.pkl: not a torch checkpoint")
            self._prefix = pkl[:-len("data.pkl")]
            if self._zip.read(self._prefix + "byteorder").decode().strip() != "little" \
                    if self._prefix + "byteorder" in names else False:
                raise CheckpointError(f"{self.path}: big-endian tensors are not supported")
            return SafeUnpickler(io.BytesIO(self._zip.read(pkl)), self).load()
        with open(self.path, "rb") as f:  # legacy: magic, protocol, sys info, object, keys, then raw storages
            unpickler = SafeUnpickler(f, self)
            magic = unpickler.load()
            if magic != 0x1950A86A20F9469CFC6C:
                raise CheckpointError(f"{self.path}: neither a zip nor a legacy torch file (not a checkpoint?)")
            unpickler.load(), unpickler.load()
            obj = unpickler.load()
            keys = unpickler.load()
            if not isinstance(keys, list) or any(str(k) not in self.refs for k in keys):
                raise CheckpointError(f"{self.path}: the legacy file's storage list does not match its tensors")
            self._legacy_offsets = {}
            for key in keys:  # each storage: int64 element count, then its bytes
                self._legacy_offsets[str(key)] = f.tell()
                count = struct.unpack("<q", f.read(8))[0]
                f.seek(count * _itemsize(self.refs[str(key)].dtype), os.SEEK_CUR)
        return obj

    def storage(self, ref: StorageRef, name="?") -> torch.Tensor:
        size = _itemsize(ref.dtype)
        if self._zip is not None:
            data = self._zip.read(f"{self._prefix}data/{ref.key}")
        else:
            with open(self.path, "rb") as f:
                f.seek(self._legacy_offsets[ref.key])
                count = struct.unpack("<q", f.read(8))[0]
                data = f.read(count * size)
        if len(data) != ref.numel * size:
            raise CheckpointError(f"{self.path}: tensor {name!r}: its storage {ref.key} has {len(data)} bytes, "
                                  f"expected {ref.numel * size}: the file is truncated")
        return torch.frombuffer(bytearray(data), dtype=ref.dtype) if data else torch.empty(0, dtype=ref.dtype)


def _itemsize(dtype):
    return torch.empty((), dtype=dtype).element_size()


def read_pickle(path):
    """The object a .pth/.bin file holds, read without running code from it: ``torch.load(weights_only=True,
    mmap=True)``, or ``SafeReader`` when that refuses the file's other objects. Tensors may come back
    as ``LazyTensor`` (read on first ``materialize``)."""
    path = Path(path)
    if not path.is_file():
        raise not_a_file(path) or FileNotFoundError(f"weight file not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the file is empty (an interrupted download?); download it again")
    for mmap in (True, False):  # legacy (pre-1.6) files cannot be memory-mapped
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except pickle.UnpicklingError:
            break  # weights_only refused an object: read it with the restricted unpickler
        except (RuntimeError, EOFError, OSError, ValueError, struct.error, TypeError, AttributeError, IndexError,
                KeyError) as e:
            if mmap and "mmap" in str(e):
                continue
            break  # truncated, damaged, or a tensor record torch cannot build: SafeReader says which
    try:
        obj = SafeReader(path).load()
    except CheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, KeyError, ValueError, TypeError,
            AttributeError, IndexError, struct.error, OSError) as e:
        raise CheckpointError(f"{path}: cannot read this file ({type(e).__name__}: {_first_line(e)}): it is "
                              "truncated or damaged; download it again") from None
    _name_tensors(obj)
    return obj


def _name_tensors(obj, prefix="", depth=0):
    """Give each LazyTensor its key (nested dicts joined by dots), so that its errors can name it."""
    if isinstance(obj, dict) and depth < 8:
        for k, v in obj.items():
            if isinstance(v, LazyTensor):
                v.name = f"{prefix}{k}"
            else:
                _name_tensors(v, f"{prefix}{k}.", depth + 1)


def _first_line(e):
    return (str(e).strip().splitlines() or [""])[0][:200]


def materialize(t) -> torch.Tensor:
    """A real tensor: a ``LazyTensor`` is read from its file now; a tensor is returned as is."""
    return t.load() if isinstance(t, LazyTensor) else t
