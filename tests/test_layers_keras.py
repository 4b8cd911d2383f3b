"""MTIN's layers under the Keras the process's tf.keras is: tf_keras in `make test` (TF_USE_LEGACY_KERAS=1), and
Keras 3 in the subprocess that test_the_layer_suite_passes_under_keras_3 starts. That subprocess runs this module,
test_routing.py and test_temporal_and_interest_masks.py (every layer against its NumPy reference) with
MTIN_TEST_KERAS=3 (conftest: TF_USE_LEGACY_KERAS=0), and the two processes' weights, outputs and serialization names of
one small model of every layer are compared.
"""
import json
import os
import pathlib
import re
import subprocess
import sys
import zlib

import numpy as np
import pytest
import reference as ref
import tensorflow as tf

from mtin_tf.config import MTINConfig
from mtin_tf.layers import AnchoredMemory, InterestBranch, InterestMask, InterestReadout, ItemEmbedding, UserMemory
from mtin_tf.layers.backend import KERAS_NAME, LEGACY, keras
from mtin_tf.layers.tables import ItemBias

ROOT = pathlib.Path(__file__).resolve().parents[1]
SUITE = ["tests/test_layers_keras.py", "tests/test_routing.py", "tests/test_temporal_and_interest_masks.py"]
CONFIG = MTINConfig(embedding_dim=8, num_masks=2, num_groups=3, max_history=7, jit_routing=False, l2=1e-3)
ITEM_IDS = np.array([40, 10, 30, 20, 50, 60], np.int64)  # not sorted: the table keeps the caller's order
USER_IDS = np.array([7, 3, 5], np.int64)
FEATURES = np.random.default_rng(0).normal(size=(len(ITEM_IDS), 5)).astype(np.float32)


def _inputs(seed=1, batch=5):
    """Histories with padding, an unknown id (99), an empty history (row 0) and an unknown user (8)."""
    rng = np.random.default_rng(seed)
    length = CONFIG.max_history
    history = rng.choice(np.append(ITEM_IDS, 99), size=(batch, length)).astype(np.int64)
    size = rng.integers(1, length + 1, size=batch)
    size[0] = 0
    history[np.arange(length)[None, :] >= size[:, None]] = 0
    times = np.sort(rng.integers(1_000, 90_000, size=(batch, length)), axis=1) * (history > 0)
    return {"history": history, "history_times": times.astype(np.int64),
            "now": np.full([batch], 100_000, np.int64), "user": rng.choice(np.append(USER_IDS, 8), batch),
            "candidate": rng.choice(ITEM_IDS, batch).astype(np.int64)}


def _model():
    """A small MTIN branch from the raw ids up: item table → memory → branch → readout (+ item bias) → logit."""
    reg = keras.regularizers.L2(CONFIG.l2)
    inputs = {"history": keras.Input((CONFIG.max_history,), dtype="int64", name="history"),
              "history_times": keras.Input((CONFIG.max_history,), dtype="int64", name="history_times"),
              "now": keras.Input((), dtype="int64", name="now"),
              "user": keras.Input((), dtype="int64", name="user"),
              "candidate": keras.Input((), dtype="int64", name="candidate")}
    embed = ItemEmbedding(len(ITEM_IDS), FEATURES.shape[1], CONFIG.embedding_dim, use_id_embedding=True,
                          item_ids=ITEM_IDS, item_features=FEATURES, kernel_regularizer=reg, id_l2=CONFIG.l2,
                          name="item_embedding")
    items, known = embed(inputs["history"])
    memory = UserMemory(len(USER_IDS), CONFIG.num_groups, CONFIG.embedding_dim, user_ids=USER_IDS,
                        row_l2=CONFIG.l2, name="memory")(inputs["user"])
    settings = {key: getattr(CONFIG, key) for key in ("num_groups", "num_masks", "routing_epsilon", "temporal_self",
                                                      "jit_routing", "routing_center")}
    rows, weights, assignment = InterestBranch(**settings, kernel_regularizer=reg, name="branch")(
        [items, inputs["history_times"], inputs["now"], memory], mask=known)
    candidate = embed(inputs["candidate"])[0]
    score = InterestReadout(CONFIG.readout, kernel_regularizer=reg, name="readout")([rows, candidate])
    bias = ItemBias(len(ITEM_IDS), item_ids=ITEM_IDS, regularizer=reg, name="item_bias")(inputs["candidate"])
    logit = keras.layers.Add(name="logit")([score, bias])
    return keras.Model(inputs, {"logit": logit, "weights": weights, "assignment": assignment})


def _weight_path(variable) -> str:
    """The weight's path in the model: Keras 3's ``path``, tf_keras's ``name`` without the ":0"."""
    return getattr(variable, "path", None) or variable.name.split(":")[0]


def _set_portable_weights(model):
    """Every trainable weight drawn from a generator seeded by its path: the same values under either Keras (the
    frozen tables keep the ids and features they were built from)."""
    for variable in model.trainable_weights:
        rng = np.random.default_rng(zlib.crc32(_weight_path(variable).encode()))
        variable.assign(rng.normal(scale=0.4, size=variable.shape).astype(np.float32))


def _reference_logit(model, x):
    """The model's logit from tests/reference.py, with the model's weights."""
    hist_x, known, _ = ref.item_embedding(model, CONFIG, ITEM_IDS, FEATURES, x["history"])
    memory = model.get_layer("memory").memory.numpy().astype(np.float64)[ref.table_rows(USER_IDS, x["user"])]
    rows, weights, assignment = ref.interest_branch(model.get_layer("branch"), CONFIG, hist_x, known,
                                                    x["history_times"], x["now"], memory)
    candidate = ref.item_embedding(model, CONFIG, ITEM_IDS, FEATURES, x["candidate"])[0]
    bias = model.get_layer("item_bias").bias.numpy()[ref.table_rows(ITEM_IDS, x["candidate"])]
    return ref.interest_readout(model.get_layer("readout"), CONFIG.readout, rows, candidate) + bias, assignment


@pytest.fixture(scope="module")
def portable_model():
    """_model() with _set_portable_weights (building it traces the branch: ~15 s, so once per module)."""
    model = _model()
    _set_portable_weights(model)
    return model


def test_the_layers_are_the_keras_of_tf_keras_and_importing_them_kept_an_explicit_choice():
    assert LEGACY == (os.environ.get("MTIN_TEST_KERAS") != "3")
    assert issubclass(InterestMask, tf.keras.layers.Layer)  # whichever Keras tf.keras is in this process
    if not LEGACY:  # mtin_tf, imported by conftest, kept conftest's explicit "0"
        assert os.environ["TF_USE_LEGACY_KERAS"] == "0"


def test_a_model_of_every_layer_matches_the_numpy_reference_and_dumps_for_the_other_keras(portable_model):
    model, x = portable_model, _inputs()
    out = model(x)
    want, assignment = _reference_logit(model, x)
    np.testing.assert_array_equal(out["assignment"].numpy(), assignment)
    assert (assignment[0] == -1).all() and (assignment[1:] >= 0).any()  # the empty history routes nothing
    np.testing.assert_allclose(out["logit"].numpy(), want, rtol=1e-4, atol=1e-4)
    names = _registered_names(model)
    assert names == ["mtin>InterestAggregation", "mtin>InterestBranch", "mtin>InterestGroupRouting",
                     "mtin>InterestMask", "mtin>InterestReadout", "mtin>ItemBias", "mtin>ItemEmbedding",
                     "mtin>ParallelTemporalMask", "mtin>UserMemory"]
    if os.environ.get("MTIN_KERAS_DUMP"):  # the tf_keras run compares this process's model with its own
        pathlib.Path(os.environ["MTIN_KERAS_DUMP"]).write_text(json.dumps(_dump(model, out, names)))


def _registered_names(model):
    """The serialization names of the model's MTIN layers, sublayers included."""
    return sorted({keras.saving.get_registered_name(type(layer)) for layer in model._flatten_layers(include_self=False)
                   if type(layer).__module__.startswith("mtin_tf")})


def _dump(model, out, names):
    return {"weights": sorted([_weight_path(v), list(v.shape)] for v in model.weights), "names": names,
            "logit": out["logit"].numpy().tolist(), "assignment": out["assignment"].numpy().tolist()}


def test_the_model_round_trips_the_keras_file_and_a_saved_model(portable_model, tmp_path):
    model, x = portable_model, _inputs(2)
    want = model(x)["logit"].numpy()
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(loaded(x)["logit"].numpy(), want, rtol=1e-6, atol=1e-6)
    model.export(str(tmp_path / "saved_model"))  # Model.export in both Kerases: a SavedModel with a "serve" endpoint
    restored = tf.saved_model.load(str(tmp_path / "saved_model"))  # kept: its variables live as long as it does
    serve = restored.serve
    tensors = {k: tf.constant(v) for k, v in x.items()}  # Keras 3 serves the inputs' dict, tf_keras their list
    served = serve(tensors) if not LEGACY else serve([tensors[i.name.split(":")[0]] for i in model.inputs])
    np.testing.assert_allclose(served["logit"].numpy(), want, rtol=1e-5, atol=1e-5)


def test_a_small_model_trains_and_reports_its_routing_metrics():
    keras.utils.set_random_seed(0)
    model, x = _model(), _inputs(3, batch=64)
    y = (np.isin(x["candidate"], [10, 30, 50])).astype(np.float32)  # clicks depend on the candidate
    model.compile(keras.optimizers.Adam(0.02),
                  loss={"logit": keras.losses.BinaryCrossentropy(from_logits=True)})
    history = model.fit(x, {"logit": y}, batch_size=16, epochs=4, verbose=0, shuffle=False).history
    assert history["loss"][-1] < 0.7 * history["loss"][0]
    for key in ("dropped", "groups_used", "largest_group"):  # add_metric under tf_keras, Mean trackers in Keras 3
        values = history[f"branch_{key}"]
        assert len(values) == 4 and all(np.isfinite(values))
    assert 1.0 <= history["branch_groups_used"][-1] <= CONFIG.num_groups
    assert 0.0 <= history["branch_dropped"][-1] < 1.0


def test_masks_reach_the_layers_only_through_mask_and_none_leaves_them():
    """A Keras mask attached to an input (Masking, Embedding(mask_zero=True)) is never filled in for ``mask``, in an
    eager call or a functional model, and no layer attaches one to its outputs: only an explicit mask= masks."""
    rng = np.random.default_rng(5)
    memory, groups = rng.normal(size=(2, 3, 4)).astype(np.float32), rng.normal(size=(2, 3, 4)).astype(np.float32)
    groups[:, 1] = 0.0  # Masking(0) marks group 1 as masked
    layer = InterestMask(tau=0.2)
    plain = layer([memory, groups])
    masked_groups = keras.layers.Masking(0.0)(groups)
    assert masked_groups._keras_mask is not None
    implicit = layer([memory, masked_groups])
    np.testing.assert_array_equal(implicit[1].numpy(), plain[1].numpy())
    assert all(getattr(t, "_keras_mask", None) is None for t in implicit)
    explicit = layer([memory, groups], mask=np.array([[True, False, True]] * 2))
    assert (explicit[1].numpy()[:, :, 1] == 0).all() and (plain[1].numpy()[:, :, 1] > 0).all()
    m_in, g_in = keras.Input((3, 4)), keras.Input((3, 4))
    model = keras.Model([m_in, g_in], layer([m_in, keras.layers.Masking(0.0)(g_in)]))
    np.testing.assert_allclose(model([memory, groups])[1].numpy(), plain[1].numpy(), rtol=1e-6)


def test_the_pre_mask_input_forms_of_saved_models_give_the_same_outputs(portable_model):
    """Models saved before the mask= convention call the branch and the anchored memory with the masks among the
    inputs: that form still loads and gives what the mask= form gives."""
    model, x = portable_model, _inputs(4)
    items, known = model.get_layer("item_embedding")(x["history"])
    memory = model.get_layer("memory")(x["user"])
    branch = model.get_layer("branch")
    new = branch([items, x["history_times"], x["now"], memory], mask=known, report_metrics=False)
    old = branch([items, known, x["history_times"], x["now"], memory], report_metrics=False)
    for a, b in zip(new, old):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    with pytest.raises(ValueError, match="needs mask="):
        branch([items, x["history_times"], x["now"], memory], report_metrics=False)
    rng = np.random.default_rng(6)
    residual, anchors = rng.normal(size=(2, 3, 4)).astype(np.float32), rng.normal(size=(2, 3, 5, 4)).astype(np.float32)
    known, times, now = rng.random((2, 3, 5)) < 0.6, rng.integers(0, 100, (2, 3, 5)), np.array([50, 80])
    anchored = AnchoredMemory()
    np.testing.assert_array_equal(anchored([residual, anchors, times, now], mask=known).numpy(),
                                  anchored([residual, anchors, known, times, now]).numpy())


def test_a_layer_called_on_the_other_kerases_tensor_names_both_ways_out():
    other = __import__("keras" if LEGACY else "tf_keras")
    with pytest.raises(TypeError, match="TF_USE_LEGACY_KERAS") as error:
        InterestMask()([other.Input((3, 4)), other.Input((3, 4))])
    message = str(error.value)
    assert KERAS_NAME in message and ("build the model with tf_keras" if LEGACY else "with keras (Keras 3)") in message


def test_the_readme_snippet_for_this_keras_runs():
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    code = next(b for b in blocks if ("import tf_keras" in b) == LEGACY and "InterestGroupRouting(" in b)
    scope = {}
    exec(compile(code.replace('import os; os.environ["TF_USE_LEGACY_KERAS"] = "1"', ""), "README.md", "exec"),
         scope)  # noqa: S102 - our own README; the environment line is this process's conftest's job
    h, w, assignment = scope["model"]([np.random.rand(2, 50, 64).astype("float32"),
                                       np.random.rand(2, 4, 64).astype("float32"), np.ones((2, 50), bool)])
    assert h.shape == (2, 4, 64) and w.shape == (2, 4, 4) and assignment.shape == (2, 50)
    np.testing.assert_allclose(np.asarray(w).sum(-1), 1.0, atol=1e-5)


if not LEGACY:
    def test_the_model_builder_says_it_needs_tf_keras():
        from mtin_tf.model import build_mtin
        with pytest.raises(RuntimeError, match="TF_USE_LEGACY_KERAS=1 before TensorFlow is imported"):
            build_mtin(CONFIG, ITEM_IDS, FEATURES, USER_IDS)

if LEGACY:
    def test_the_layer_suite_passes_under_keras_3_with_the_same_weights_outputs_and_names(portable_model, tmp_path):
        dump = tmp_path / "keras3.json"
        env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
        env.update(MTIN_TEST_KERAS="3", MTIN_KERAS_DUMP=str(dump))
        run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", *SUITE],
                             cwd=ROOT,
                             env=env, capture_output=True, text=True, timeout=1200)
        summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else run.stderr[-2000:]
        assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
        assert re.search(r"\d+ passed", summary) and "skipped" not in summary and "failed" not in summary, summary
        model = portable_model
        out = model(_inputs())
        mine, theirs = _dump(model, out, _registered_names(model)), json.loads(dump.read_text())
        assert theirs["weights"] == mine["weights"]  # same paths and shapes
        assert theirs["names"] == mine["names"] and theirs["assignment"] == mine["assignment"]
        np.testing.assert_allclose(theirs["logit"], mine["logit"], rtol=1e-5, atol=1e-5)


def test_the_branch_settings_are_mtin_config_fields_with_the_same_defaults():
    """InterestBranch takes its settings by MTINConfig's field names (the model passes them by name, no hand-kept
    copy); a standalone branch defaults to what MTINConfig does, except XLA for routing (off outside a model)."""
    from mtin_tf.config import MTINConfig
    from mtin_tf.layers.branch import BRANCH_SETTINGS

    defaults = MTINConfig()
    differ = {key: (value, getattr(defaults, key)) for key, value in BRANCH_SETTINGS.items()
              if getattr(defaults, key) != value}
    assert differ == {"jit_routing": (False, True)}
