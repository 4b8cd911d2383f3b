"""Baselines fed by the same examples and inputs as MTIN (mtin_tf.features), for comparisons and benchmarks."""
from mtin_tf.baselines.din import build_din

__all__ = ["build_din"]
