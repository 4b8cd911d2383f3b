"""Baselines fed by the same examples and inputs as MTIN (mtin_tf.features), for comparisons and benchmarks.

Every builder has build_mtin's signature ``(config, item_ids, item_features, user_ids=None, *, compile=True)``,
returns {logit, click_probability} and trains with mtin_tf.train.train_mtin(builder=...). BUILDERS maps the
``--model`` names of ``mtin train`` / ``mtin experiment`` to them; MODELS is every such name, MTIN's first.
The builders (and TensorFlow) load when BUILDERS or a builder is first used, so that MODELS alone stays light
(``mtin train --help``).
"""
import importlib as _importlib

# --model name -> (module of mtin_tf.baselines, its builder)
_BUILDERS = {"bpr": ("bpr", "build_bpr"), "lstm": ("sequence", "build_lstm"), "cnn": ("sequence", "build_cnn"),
             "ncf": ("ncf", "build_ncf"), "atrank": ("atrank", "build_atrank"), "din": ("din", "build_din"),
             "mind": ("mind", "build_mind"), "thacil": ("thacil", "build_thacil"),
             "alpine": ("alpine", "build_alpine")}
MODELS = ("mtin", *_BUILDERS)  # the models mtin_tf.train.train_and_evaluate trains: MTIN (build_mtin), the baselines

__all__ = sorted(["BUILDERS", "MODELS", *(function for _, function in _BUILDERS.values())])


def __getattr__(name):
    if name == "BUILDERS":
        builders = {key: __getattr__(function) for key, (_, function) in _BUILDERS.items()}
        globals()["BUILDERS"] = builders  # one dict from now on
        return builders
    for module, function in _BUILDERS.values():
        if function == name:
            return getattr(_importlib.import_module(f"mtin_tf.baselines.{module}"), function)
    raise AttributeError(f"module 'mtin_tf.baselines' has no attribute {name!r}")
