import os

# The Keras 3 run of the layer suite (tests/test_layers_keras.py starts it with MTIN_TEST_KERAS=3): an explicit "0",
# which importing mtin_tf leaves alone.
if os.environ.get("MTIN_TEST_KERAS") == "3":
    os.environ["TF_USE_LEGACY_KERAS"] = "0"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

# Before the first TensorFlow import anywhere in the test session: importing mtin_tf sets TF_USE_LEGACY_KERAS=1
# (TFT, TFMA and TFRS need Keras 2, i.e. tf_keras) unless it is set.
import mtin_tf  # noqa: F401

# The MTINConfig fields of the tiny runs of the experiment and `mtin train` tests.
TINY_BASE = {"embedding_dim": 8, "num_masks": 2, "num_groups": 2, "max_history": 6, "batch_size": 64, "epochs": 1}


@pytest.fixture
def tiny_base():
    return dict(TINY_BASE)


def _planted(root, users: int, items: int, interactions: int) -> dict:
    """Planted data generated and built with the CLI under ``root`` (6 clusters, 4-d features, L = 6, seed 3):
    {"examples", "items", "planted"} paths."""
    from mtin_tf.cli import main as mtin

    data, examples = str(root / "data"), str(root / "examples")
    assert mtin(["data", "generate", "--out", data, "--num-users", str(users), "--num-items", str(items),
                 "--num-clusters", "6", "--feature-dim", "4", "--interactions-per-user", str(interactions),
                 "--seed", "3"]) == 0
    assert mtin(["data", "build", "--interactions", os.path.join(data, "interactions.parquet"), "--items",
                 os.path.join(data, "item_features.npz"), "--out", examples, "--max-history", "6"]) == 0
    return {"examples": examples, "items": os.path.join(data, "item_features.npz"), "planted": data}


@pytest.fixture(scope="module")
def tiny_planted(tmp_path_factory):
    """A tiny planted dataset built with the CLI (24 users, 80 items): {"examples", "items", "planted"} paths."""
    return _planted(tmp_path_factory.mktemp("planted"), users=24, items=80, interactions=20)


@pytest.fixture(scope="module")
def small_planted(tmp_path_factory):
    """Planted data like tiny_planted, larger (100 users, 200 items): tiny_planted's 11 validation users with a
    relevant item are too few for a trained retrieval to stand out from chance; these 100 users give 68."""
    return _planted(tmp_path_factory.mktemp("small_planted"), users=100, items=200, interactions=40)
