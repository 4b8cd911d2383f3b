"""MTIN's Keras layers, each usable on its own in other TensorFlow models, under tf_keras or Keras 3: whichever
tf.keras is in the process (mtin_tf.layers.backend)."""
from mtin_tf.layers.aggregation import InterestAggregation
from mtin_tf.layers.branch import InterestBranch
from mtin_tf.layers.click_level import ClickLevel
from mtin_tf.layers.combiner import ClickCombiner
from mtin_tf.layers.exposure import ExposurePrior
from mtin_tf.layers.grouped_matmul import grouped_matmul
from mtin_tf.layers.interest_mask import InterestMask
from mtin_tf.layers.pooling import MaskedPooling
from mtin_tf.layers.readout import InterestReadout
from mtin_tf.layers.retrieval_head import RetrievalHead
from mtin_tf.layers.routing import InterestGroupRouting, route_interest_groups
from mtin_tf.layers.tables import AnchoredMemory, ItemBias, ItemEmbedding, NpyRows, UserMemory
from mtin_tf.layers.temporal_mask import ParallelTemporalMask

__all__ = ["AnchoredMemory", "ClickCombiner", "ClickLevel", "ExposurePrior", "InterestAggregation", "InterestBranch",
           "InterestGroupRouting", "InterestMask", "InterestReadout", "ItemBias", "ItemEmbedding", "MaskedPooling",
           "NpyRows", "ParallelTemporalMask", "RetrievalHead", "UserMemory", "grouped_matmul", "route_interest_groups"]
