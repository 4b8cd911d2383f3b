"""mtin-tf: MTIN (Jiang et al., ACM MM 2020) as reusable Keras layers and a trainable, saveable model.

Public API: ``mtin_tf.MTINConfig``, ``mtin_tf.build_mtin``, ``mtin_tf.pretrain_memory`` and the layers in
``mtin_tf.layers``. TensorFlow is imported only when one of them is first used, so ``mtin --help`` stays fast.
The TFX pipeline and the gRPC serving code are the subpackages ``mtin_tf.pipeline`` and ``mtin_tf.serving``.

The one place that sets ``TF_USE_LEGACY_KERAS``: the model builder, trainer, pipeline (TFT, TFMA, TFRS) and serving
are tf_keras (Keras 2) code, and TensorFlow 2.16 reads the variable once, when it is first imported. Every entry
point (the ``mtin`` command, the pipeline's runners and Airflow DAG, Beam workers, the benchmarks, the tests'
conftest) imports mtin_tf before TensorFlow, so importing mtin_tf sets it to "1" unless it is already set (an explicit
"0" keeps Keras 3) or TensorFlow is already imported (its Keras is chosen then; setting the variable would only
misreport it). The layers are built on whichever Keras tf.keras is (mtin_tf.layers.backend): for Keras 3, import
keras or tensorflow before mtin_tf, or set TF_USE_LEGACY_KERAS=0.
"""
import importlib as _importlib
import importlib.util as _importlib_util
import os as _os
import sys as _sys

if "tensorflow" not in _sys.modules:
    _os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

# setup.py's package_dir: these subpackages are folders beside mtin_tf/ in the repository (tests/test_packaging.py
# checks that the two agree). Installed (`pip install .`), they are ordinary folders of mtin_tf. In a checkout, the
# editable install's finder maps them to the checkout it was installed from; _CheckoutFinder binds them to the
# checkout this mtin_tf was imported from instead, so that a copy of the tree put first on PYTHONPATH (another
# worktree sharing the venv, scripts/mutants.py's mutated copies, a benchmark's --old-code tree) runs whole.
PACKAGE_DIR = {"mtin_tf.pipeline": "pipeline", "mtin_tf.serving": "serving", "mtin_tf.schemas": "schemas"}


class _CheckoutFinder:
    def __init__(self, root: str):
        self.root = root

    def find_spec(self, fullname, path=None, target=None):
        folder = PACKAGE_DIR.get(fullname)
        init = folder and _os.path.join(self.root, folder, "__init__.py")
        if not init or not _os.path.isfile(init):
            return None
        return _importlib_util.spec_from_file_location(fullname, init,
                                                       submodule_search_locations=[_os.path.dirname(init)])


_HERE = _os.path.dirname(_os.path.abspath(__file__))
_ROOT = _os.path.dirname(_HERE)
if _os.path.isfile(_os.path.join(_ROOT, "setup.py")) and not _os.path.isdir(_os.path.join(_HERE, "pipeline")):
    _sys.meta_path.insert(0, _CheckoutFinder(_ROOT))

__version__ = "0.1.0"

_EXPORTS = {"MTINConfig": "mtin_tf.config", "build_mtin": "mtin_tf.model", "pretrain_memory": "mtin_tf.pretrain"}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(_importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mtin_tf' has no attribute {name!r}")
