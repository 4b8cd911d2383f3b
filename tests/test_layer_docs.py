"""The docstrings of the layers (mtin_tf.layers and the baselines' layers): every layer documents its Args, Call
arguments, Input shape, Output shape and an Example, and every Example runs (doctest over each module), so the
documentation cannot rot; and every layer registered for serialization is one of them."""
import doctest
import importlib
import inspect
import pkgutil

import numpy as np
import pytest

import mtin_tf.layers
from mtin_tf.layers.backend import Layer

# The layers' own modules, and the baselines' modules that define layers (theirs stay with their models).
MODULES = sorted([info.name for info in pkgutil.iter_modules(mtin_tf.layers.__path__, "mtin_tf.layers.")]
                 + [f"mtin_tf.baselines.{name}" for name in ("alpine", "atrank", "common", "din", "mind", "thacil")])
SECTIONS = ("Args:", "Call arguments:", "Input shape:", "Output shape:", "Example:")


def _layers():
    for name in MODULES:
        for _, cls in inspect.getmembers(importlib.import_module(name), inspect.isclass):
            if issubclass(cls, Layer) and cls is not Layer and cls.__module__ == name:
                yield cls


@pytest.mark.parametrize("module", MODULES)
def test_the_examples_of_the_module_run(module):
    np.random.seed(0)
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    result = doctest.testmod(importlib.import_module(module), optionflags=flags, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} doctest examples of {module} failed"


@pytest.mark.parametrize("cls", list(_layers()), ids=lambda cls: cls.__name__)
def test_every_layer_documents_its_sections_in_order_with_an_example(cls):
    doc = inspect.getdoc(cls)
    positions = [doc.find(f"\n{section}\n") for section in SECTIONS]
    assert all(p > 0 for p in positions), f"{cls.__name__} lacks {[s for s, p in zip(SECTIONS, positions) if p < 0]}"
    assert positions == sorted(positions), f"{cls.__name__}: sections out of order"
    assert ">>> " in doc[positions[-1]:], f"{cls.__name__}: the Example has no >>> line"
    summary = doc.split("\n\n")[0]
    assert summary.strip(), cls.__name__


def test_every_registered_layer_is_a_documented_one():
    import tf_keras

    import mtin_tf.model  # noqa: F401 - registers whatever the model module defines
    documented = set(_layers())
    registered = {obj for name, obj in tf_keras.saving.get_custom_objects().items()
                  if name.startswith("mtin>") and inspect.isclass(obj) and issubclass(obj, tf_keras.layers.Layer)}
    assert registered and registered <= documented, registered - documented
    assert all(cls.__module__.startswith(("mtin_tf.layers.", "mtin_tf.baselines.")) for cls in registered)
