"""Unpickling downloaded files without running their code.

A pickle is a program: `pickle.load` calls whatever callables the file names
(`os.system`, `subprocess.Popen`, ...). The pickles the harness reads come from the
network (the detectron2 R50 checkpoint, RefCOCO's `refs(unc).p`, ADE20K-full's
`index_ade20k.pkl`), some from archive mirrors without a published checksum, so they are
read with an unpickler that resolves only the plain data types these files hold:
builtin containers and numpy arrays, dtypes and scalars. Anything else is refused
with `UnsafePickleError`, naming the file and the global it asked for, before any
of the file's calls run.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

# (module, name) pairs a data pickle may reference. Builtin containers and scalars are
# constructed by opcodes without a global lookup, except these (protocol 0-2 pickles name
# them). numpy's array/dtype/scalar reconstructors live in numpy.core (numpy 1.x files) or
# numpy._core (numpy 2.x files); both spellings are admitted because the downloaded files
# were written years apart. `_codecs.encode` is how a Python 3 protocol-2 pickle stores
# bytes (latin-1 text -> bytes): pure data conversion.
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    [("builtins", n) for n in ("dict", "list", "tuple", "set", "frozenset", "bytearray", "bytes",
                                "str", "int", "float", "complex", "bool", "slice", "range")]
    + [("__builtin__", n) for n in ("dict", "list", "tuple", "set", "frozenset", "bytearray", "str",
                                    "unicode", "int", "long", "float", "complex", "bool")]
    + [("collections", "OrderedDict"), ("_codecs", "encode"), ("copy_reg", "_reconstructor"),
       ("copyreg", "_reconstructor")]
    + [(mod, n) for mod in ("numpy.core.multiarray", "numpy._core.multiarray") for n in ("_reconstruct", "scalar")]
    + [(mod, "_frombuffer") for mod in ("numpy.core.numeric", "numpy._core.numeric")]  # protocol 5 arrays
    + [("numpy", "ndarray"), ("numpy", "dtype")]
    + [("numpy", n) for n in ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8",
                              "uint16", "uint32", "uint64", "bool_")]
    + [("numpy.dtypes", n) for n in ("Float16DType", "Float32DType", "Float64DType", "Int8DType", "Int16DType",
                                     "Int32DType", "Int64DType", "UInt8DType", "UInt16DType", "UInt32DType",
                                     "UInt64DType", "BoolDType", "StrDType", "BytesDType", "ObjectDType")]
)


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for a callable outside `ALLOWED_GLOBALS`; nothing of it was run."""


class _DataUnpickler(pickle.Unpickler):
    def __init__(self, fh, path: Path, **kwargs):
        super().__init__(fh, **kwargs)
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise UnsafePickleError(f"{self._path}: refused to unpickle global {module}.{name} — the file holds "
                                "code, not data (a tampered or wrong download?); delete it and download it "
                                "again from the official source")

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self._path}: refused a persistent id in the pickle — not a plain data file")


def load(path: str | os.PathLike, *, encoding: str = "ASCII", errors: str = "strict") -> Any:
    """`pickle.load` of the file `path`, admitting only plain data (see `ALLOWED_GLOBALS`).

    `encoding`/`errors` are `pickle.Unpickler`'s (Python 2 pickles: `encoding="latin1"`).
    Raises `UnsafePickleError` (a `pickle.UnpicklingError`) naming `path` for anything else.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        return _DataUnpickler(fh, path, encoding=encoding, errors=errors).load()
