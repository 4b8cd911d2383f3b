"""schemas/ agrees with mtin_tf/features.py (names, types, scalar vs list) and is what the generator writes."""
import os

import pytest
from google.protobuf import text_format

from mtin_tf import features as F
from mtin_tf.data import schema as S
from mtin_tf.data.canonical import IS_TEST

SCHEMAS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "schemas")


def _load(rel):
    from tensorflow_metadata.proto.v0 import schema_pb2

    with open(os.path.join(SCHEMAS, rel), encoding="utf-8") as f:
        return text_format.Parse(f.read(), schema_pb2.Schema())


def test_example_schema_matches_features_module():
    from tensorflow_metadata.proto.v0 import schema_pb2

    schema = _load(S.EXAMPLES_SCHEMA)
    by_name = {f.name: f for f in schema.feature}
    assert list(by_name) == [s.name for s in F.EXAMPLE_FEATURES]
    for spec in F.EXAMPLE_FEATURES:
        feat = by_name[spec.name]
        assert feat.type == {"int64": schema_pb2.INT, "float32": schema_pb2.FLOAT}[spec.dtype]
        if spec.is_history:
            assert not feat.HasField("shape") and feat.value_count.max == F.DEFAULT_MAX_HISTORY
            assert feat.value_count.min == 0  # empty histories are valid
        else:
            assert [d.size for d in feat.shape.dim] == [1] and feat.presence.min_fraction == 1.0


def test_interaction_schema_matches_canonical_columns():
    schema = _load(S.INTERACTIONS_SCHEMA)
    assert [f.name for f in schema.feature] == list(F.INTERACTION_COLUMNS) + [IS_TEST]


@pytest.mark.parametrize("rel,text", [(S.EXAMPLES_SCHEMA, S.example_schema_text()),
                                      (S.INTERACTIONS_SCHEMA, S.interaction_schema_text())])
def test_committed_schemas_are_generated(rel, text):
    with open(os.path.join(SCHEMAS, rel), encoding="utf-8") as f:
        assert f.read() == text, f"regenerate with: python -m mtin_tf.data.schema {SCHEMAS}"
