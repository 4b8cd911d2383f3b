"""Loading untrusted pickles (KuaiShou's ``dataset.pkl``) without running code from the file.

:class:`RestrictedUnpickler` admits only what ALPINE's published layout is made of: the built-in containers and
scalars (list, tuple, dict, set, frozenset, int, float, complex, bool, str, bytes, bytearray), ``collections``'
OrderedDict and defaultdict, and NumPy arrays and scalars of numeric (not object) dtypes. Any other global a pickle
names — ``os.system``, ``builtins.eval``, ``subprocess.Popen``, a class of some module — is refused with
:class:`UnsafePickleError` *before* it is imported or called, so nothing in the file runs. Built-in containers and
scalars need no global at all in a pickle; the admitted globals construct data only.
"""
from __future__ import annotations

import builtins
import collections
import pickle
from typing import BinaryIO

import numpy as np

from mtin_tf.data.report import BadInputError

_BUILTINS = ("list", "tuple", "dict", "set", "frozenset", "int", "float", "complex", "bool", "str", "bytes",
             "bytearray")
_COLLECTIONS = ("OrderedDict", "defaultdict")
# numpy.core (NumPy 1) and numpy._core (NumPy 2) spell the same reconstruction helpers
_NUMPY = {(mod, name) for core in ("numpy.core", "numpy._core")
          for mod, name in ((f"{core}.multiarray", "_reconstruct"), (f"{core}.multiarray", "scalar"),
                            (f"{core}.numeric", "_frombuffer"))}


class UnsafePickleError(BadInputError):
    """A pickle names a global outside the admitted data types."""


def _numeric_dtype(*args, **kwargs) -> np.dtype:
    """``numpy.dtype`` as a pickle calls it, refusing object dtypes (whose items would be arbitrary objects)."""
    dtype = np.dtype(*args, **kwargs)
    if dtype.hasobject:
        raise UnsafePickleError(f"refused a NumPy array of dtype {dtype} (Python objects); only numeric dtypes")
    return dtype


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose :meth:`find_class` admits only data types (see the module docstring)."""

    def __init__(self, file: BinaryIO, *, source: str = "pickle"):
        super().__init__(file)
        self._source = source

    def find_class(self, module: str, name: str):
        if module == "builtins" and name in _BUILTINS:
            return getattr(builtins, name)
        if module == "collections" and name in _COLLECTIONS:
            return getattr(collections, name)
        if module == "numpy" and name == "ndarray":
            return np.ndarray
        if module == "numpy" and name == "dtype":
            return _numeric_dtype
        if (module, name) in _NUMPY:
            return super().find_class(module, name)
        raise UnsafePickleError(f"{self._source}: refused to load {module}.{name}: the file asks to import and call "
                                f"it, and only lists, tuples, dicts, sets, numbers, strings and numeric NumPy arrays "
                                f"are admitted (nothing from the file was run)")


def load_all(path: str, count: int) -> list:
    """The first ``count`` consecutive pickles of ``path``, through :class:`RestrictedUnpickler`.

    A refused global, a truncated or corrupt file, or fewer than ``count`` pickles is a
    :class:`~mtin_tf.data.report.BadInputError` naming the file.
    """
    objects = []
    try:
        with open(path, "rb") as f:
            for _ in range(count):  # one unpickler per pickle: each pickle.dump starts a fresh memo
                objects.append(RestrictedUnpickler(f, source=path).load())
    except UnsafePickleError:
        raise
    except EOFError as e:
        raise BadInputError(f"{path}: holds {len(objects)} pickle(s), expected at least {count}") from e
    except OSError as e:
        raise BadInputError(f"{path}: cannot open ({e.strerror or e})") from e
    except Exception as e:  # noqa: BLE001  (any corruption: UnpicklingError, ValueError, MemoryError, ...)
        raise BadInputError(f"{path}: pickle {len(objects) + 1} is corrupt ({type(e).__name__}: {e})") from e
    return objects
