"""Baselines fed by the same examples and inputs as MTIN (mtin_tf.features), for comparisons and benchmarks.

Every builder has build_mtin's signature ``(config, item_ids, item_features, user_ids=None, *, compile=True)``,
returns {logit, click_probability} and trains with mtin_tf.train.train_mtin(builder=...). BUILDERS maps the
``--model`` names of ``mtin train`` / ``mtin experiment`` to them.
"""
from mtin_tf.baselines.alpine import build_alpine
from mtin_tf.baselines.atrank import build_atrank
from mtin_tf.baselines.bpr import build_bpr
from mtin_tf.baselines.din import build_din
from mtin_tf.baselines.mind import build_mind
from mtin_tf.baselines.ncf import build_ncf
from mtin_tf.baselines.sequence import build_cnn, build_lstm
from mtin_tf.baselines.thacil import build_thacil

BUILDERS = {"bpr": build_bpr, "lstm": build_lstm, "cnn": build_cnn, "ncf": build_ncf, "atrank": build_atrank,
            "din": build_din, "mind": build_mind, "thacil": build_thacil, "alpine": build_alpine}

__all__ = ["BUILDERS", "build_alpine", "build_atrank", "build_bpr", "build_cnn", "build_din", "build_lstm",
           "build_mind", "build_ncf", "build_thacil"]
