"""The TFRS two-tower retrieval anchor (mtin_tf.two_tower): NumPy references, training, `mtin experiment`."""
import csv
import json

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from mtin_tf import features as F
from mtin_tf.config import MTINConfig
from mtin_tf.metrics import retrieval_recall_hit_rate
from mtin_tf.retrieval import catalogue_queries
from mtin_tf.two_tower import (
    CANDIDATE_PROBABILITY,
    EPOCH_LOSS,
    TwoTower,
    click_dataset,
    retrieve,
    train_two_tower,
    two_tower_catalogue_metrics,
)

D = 3
ITEM_IDS = np.array([30, 10, 50, 20, 40], np.int64)  # neither dense nor sorted: a table-order mix-up shows
USER_IDS = np.array([7, 3], np.int64)
UNKNOWN_ITEM, UNKNOWN_USER = 99_999, 99


def random_model(use_id_embedding=True):
    """A TwoTower whose every trainable weight (biases too) is random, so no term of the towers is zero."""
    rng = np.random.default_rng(0)
    features = rng.normal(size=(len(ITEM_IDS), 2)).astype(np.float32)
    config = MTINConfig(embedding_dim=D, use_id_embedding=use_id_embedding, l2=0.0, max_history=4)
    model = TwoTower(config, ITEM_IDS, features, USER_IDS)
    model({F.USER_ID: tf.constant([7], tf.int64), F.CLICKED_ITEMS: tf.constant([[30, 0]], tf.int64),
           F.ITEM_ID: tf.constant([10], tf.int64)})  # builds every layer
    for v in model.trainable_variables:
        v.assign(rng.normal(size=v.shape).astype(np.float32))
    return model, features


def numpy_towers(model, features):
    """(query(user, history), candidate(item)) of the module docstring in NumPy, from the model's weights."""
    embed = model.item_embedding
    w_e, b_e = embed.projection.kernel.numpy(), embed.projection.bias.numpy()
    ids_embedding = embed.id_embedding.numpy() if embed.use_id_embedding else np.zeros([len(ITEM_IDS) + 1, D])
    sorted_ids = np.sort(ITEM_IDS)

    def x(item):  # x_j = W_e f_j + b_e + e_j; an unknown id: W_e·0 + b_e + e_0
        if item in ITEM_IDS:
            return features[list(ITEM_IDS).index(item)] @ w_e + b_e + ids_embedding[np.searchsorted(sorted_ids, item)
                                                                                     + 1]
        return b_e + ids_embedding[0]

    def mlp(tower, z):
        hidden, out = tower.layers
        return np.maximum(z @ hidden.kernel.numpy() + hidden.bias.numpy(), 0) @ out.kernel.numpy() + out.bias.numpy()

    memory = model.user_embedding.memory.numpy()[:, 0]  # [users + 1, d]; row 0: unknown users

    def query(user, history):
        e = memory[np.searchsorted(np.sort(USER_IDS), user) + 1] if user in USER_IDS else memory[0]
        known = [x(i) for i in history if i in ITEM_IDS]  # padding (0) and unknown ids are masked out
        mean = np.mean(known, axis=0) if known else np.zeros(D)
        return mlp(model.query_tower, np.concatenate([e, mean]))

    return query, lambda item: mlp(model.candidate_tower, x(item))


@pytest.mark.parametrize("use_id_embedding", [True, False])
def test_towers_match_a_numpy_reference_and_padding_does_not_change_the_query(use_id_embedding):
    model, features = random_model(use_id_embedding)
    query, candidate = numpy_towers(model, features)
    users = [7, 3, UNKNOWN_USER, 7]
    histories = [[30, 50, 0, 0], [0, 0, 0, 0], [20, UNKNOWN_ITEM, 10, 0], [40, 10, 20, 30]]
    got = model.query({F.USER_ID: tf.constant(users, tf.int64), F.CLICKED_ITEMS: tf.constant(histories, tf.int64)})
    assert got.shape == (4, D)
    np.testing.assert_allclose(got, [query(u, h) for u, h in zip(users, histories)], rtol=1e-5, atol=1e-5)
    # More padding, or an unknown id in place of padding, leaves the query as it was.
    padded = [h + [0, 0, 0] for h in histories]
    padded[0][5] = UNKNOWN_ITEM
    again = model.query({F.USER_ID: tf.constant(users, tf.int64), F.CLICKED_ITEMS: tf.constant(padded, tf.int64)})
    np.testing.assert_allclose(again, got, rtol=1e-6, atol=1e-6)
    assert not np.allclose(got[0], got[2])  # and the history does matter
    items = [10, 40, UNKNOWN_ITEM, 30]
    np.testing.assert_allclose(model.candidate(tf.constant(items, tf.int64)), [candidate(i) for i in items],
                               rtol=1e-5, atol=1e-5)
    # The catalogue (what retrieval scores) is every item's candidate vector, with its id.
    table, ids = model.catalogue()
    assert sorted(ids.numpy().tolist()) == sorted(ITEM_IDS.tolist())
    np.testing.assert_allclose(table, [candidate(int(i)) for i in ids.numpy()], rtol=1e-5, atol=1e-5)


def test_loss_is_the_in_batch_softmax_with_log_q_correction_and_accidental_hits_removed():
    model, features = random_model()
    query, candidate = numpy_towers(model, features)
    users = [7, 3, 7, UNKNOWN_USER]
    histories = [[30, 0, 0, 0], [20, 40, 0, 0], [30, 50, 0, 0], [0, 0, 0, 0]]
    items = [10, 30, 10, 40]  # item 10 twice: for rows 0 and 2, the other row's 10 is not a negative
    p = np.array([0.4, 0.15, 0.4, 0.05], np.float32)
    batch = {F.USER_ID: tf.constant(users, tf.int64), F.CLICKED_ITEMS: tf.constant(histories, tf.int64),
             F.ITEM_ID: tf.constant(items, tf.int64), CANDIDATE_PROBABILITY: tf.constant(p)}
    got = float(model.compute_loss(batch))

    def reference(log_q=True, remove_hits=True):
        q = np.array([query(u, h) for u, h in zip(users, histories)])
        c = np.array([candidate(i) for i in items])
        logits = q @ c.T - (np.log(p)[None] if log_q else 0)
        losses = []
        for i in range(len(items)):
            keep = [k for k in range(len(items)) if k == i or items[k] != items[i] or not remove_hits]
            row = logits[i, keep]
            losses.append(np.log(np.exp(row - row.max()).sum()) + row.max() - logits[i, i])
        return float(np.mean(losses))

    np.testing.assert_allclose(got, reference(), rtol=1e-5)
    # A temperature T divides q · c before the correction (config.retrieval_temperature).
    sharp = TwoTower(MTINConfig(embedding_dim=D, l2=0.0, max_history=4, retrieval_temperature=0.5), ITEM_IDS,
                     features, USER_IDS)
    sharp(batch)
    sharp.set_weights(model.get_weights())
    q = np.array([query(u, h) for u, h in zip(users, histories)])
    c = np.array([candidate(i) for i in items])
    logits = q @ c.T / 0.5 - np.log(p)[None]
    want = np.mean([np.log(np.exp(logits[i, [k for k in range(4) if k == i or items[k] != items[i]]]).sum())
                    - logits[i, i] for i in range(4)])
    np.testing.assert_allclose(float(sharp.compute_loss(batch)), want, rtol=1e-5)
    # Each part of the loss shows: without the correction or with the accidental hit kept it would differ.
    assert abs(reference(log_q=False) - got) > 1e-3 and abs(reference(remove_hits=False) - got) > 1e-3


def test_click_dataset_holds_the_clicks_with_their_share_of_the_clicks():
    arrays = {F.USER_ID: np.array([1, 1, 2, 2, 3]), F.ITEM_ID: np.array([10, 11, 10, 12, 11]),
              F.CLICKED_ITEMS: np.zeros([5, 2], np.int64), F.LABEL: np.array([1, 0, 1, 1, 1])}
    batches = list(click_dataset(arrays, batch_size=10).as_numpy_iterator())
    assert len(batches) == 1
    got = dict(zip(batches[0][F.ITEM_ID].tolist(), batches[0][CANDIDATE_PROBABILITY].tolist()))
    assert sorted(batches[0][F.ITEM_ID].tolist()) == [10, 10, 11, 12]  # the unclicked (1, 11) is not a positive
    np.testing.assert_allclose([got[10], got[11], got[12]], [0.5, 0.25, 0.25])


def test_retrieval_is_the_exact_top_k_and_never_returns_an_excluded_item():
    model, features = random_model()
    table, ids = (t.numpy() for t in model.catalogue())
    users = {F.USER_ID: np.array([7, 3, UNKNOWN_USER], np.int64),
             F.CLICKED_ITEMS: np.array([[30, 50, 0, 0], [10, 0, 0, 0], [0, 0, 0, 0]], np.int64)}
    exclusions = np.array([[30, 50, 20], [10, 0, 0], [0, 0, 0]], np.int64)
    q = model.query({name: tf.constant(v) for name, v in users.items()}).numpy()
    for k in (2, 5):  # k = 5: more than some users have items left, the rest of their row is empty
        got = retrieve(model, users, exclusions, k, batch_size=2)  # two batches
        for u in range(3):
            order = [int(ids[j]) for j in np.argsort(-(table @ q[u]), kind="stable") if ids[j] not in exclusions[u]]
            want = (order + [0] * k)[:k]
            assert got[u].tolist() == want, (k, u)
            assert not set(got[u].tolist()) & (set(exclusions[u].tolist()) - {0})


def test_catalogue_metrics_score_the_retrieved_lists_on_catalogue_queries():
    model, _ = random_model()
    rng = np.random.default_rng(4)

    def split(n, t0):
        return {F.USER_ID: rng.choice([7, 3, UNKNOWN_USER], n), F.ITEM_ID: rng.choice(ITEM_IDS, n),
                F.TIMESTAMP: t0 + np.arange(n), F.LABEL: rng.integers(0, 2, n),
                F.CLICKED_ITEMS: rng.choice(np.r_[ITEM_IDS, 0, 0], (n, 4)),
                **{name: np.zeros([n, 4], np.int64) for name in (F.CLICKED_TIMES, F.BROWSED_ITEMS, F.BROWSED_TIMES)}}

    before, test = [split(20, 0)], split(12, 100)
    got = two_tower_catalogue_metrics(model, before, test, ks=(1, 3))
    users, exclusions, relevant_users, relevant_items = catalogue_queries(before, test)
    retrieved = retrieve(model, users, exclusions, 3)
    assert not any(set(r.tolist()) & (set(e.tolist()) - {0}) for r, e in zip(retrieved, exclusions))
    expected = retrieval_recall_hit_rate(retrieved, relevant_users, relevant_items, (1, 3))
    assert got == {f"retrieval_{key}": value for key, value in expected.items()} and got["retrieval_users"] > 0


def test_training_beats_the_untrained_model_and_chance_on_validation(small_planted, tiny_base):
    import tf_keras

    from mtin_tf.data.canonical import read_item_features
    from mtin_tf.data.examples import read_split_arrays

    arrays = read_split_arrays(small_planted["examples"], tiny_base["max_history"])
    items = read_item_features(small_planted["items"])
    config = MTINConfig(**{**tiny_base, "batch_size": 32, "epochs": 8, "learning_rate": 0.01,
                           "use_id_embedding": False})
    before, validation = [arrays["train"]], arrays["validation"]
    tf_keras.utils.set_random_seed(config.seed)
    untrained = TwoTower(config, items.item_ids, items.features, np.unique(arrays["train"][F.USER_ID]))
    start = two_tower_catalogue_metrics(untrained, before, validation, ks=(20,))["retrieval_recall@20"]
    model, history = train_two_tower(config, arrays["train"], items.item_ids, items.features,
                                     validation_arrays=validation, patience=3)
    got = two_tower_catalogue_metrics(model, before, validation, ks=(20, 50))
    _, exclusions, _, _ = catalogue_queries(before, validation)
    chance = 20 / (len(items.item_ids) - (exclusions > 0).sum(1).mean())  # Recall@20 of a uniform draw
    assert got["retrieval_users"] > 50
    assert got["retrieval_recall@20"] > start + 0.08 and got["retrieval_recall@20"] > 2 * chance, (got, start, chance)
    # The best epoch's weights are restored: its validation Recall@50 is the model's.
    curve = history.history["val_retrieval_recall@50"]
    np.testing.assert_allclose(got["retrieval_recall@50"], max(curve))
    assert len(curve) <= config.epochs and len(history.history["mean_loss"]) == len(curve)


def test_experiment_with_a_two_tower_run_reports_its_retrieval_columns(tiny_planted, tiny_base, tmp_path):
    from mtin_tf.cli import main as mtin

    config = {"out": str(tmp_path / "out"), "seeds": [0, 1], "base": tiny_base,
              "datasets": {"tiny": {**tiny_planted, "set": {"use_id_embedding": False}}},
              "tables": [{"name": "retrieval", "title": "Catalogue", "runs": [
                  {"name": "BPR", "model": "bpr"}, {"name": "Two-tower (TFRS)", "model": "two_tower"}]}]}
    path = tmp_path / "experiment.json"
    path.write_text(json.dumps(config))
    assert mtin(["experiment", "--config", str(path)]) == 0
    out = tmp_path / "out"
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [(r["run"], r["model"], r["seed"]) for r in rows] == [
        ("BPR", "bpr", "0"), ("BPR", "bpr", "1"), ("Two-tower (TFRS)", "two_tower", "0"),
        ("Two-tower (TFRS)", "two_tower", "1")]
    for r in rows[2:]:  # retrieval only: no click metrics, never below the AUC floor
        assert r["auc"] == r["gauc"] == r["validation_auc"] == r["below_floor"] == ""
        for k in (20, 50, 100):
            assert 0.0 <= float(r[f"retrieval_recall@{k}"]) <= float(r[f"retrieval_hit_rate@{k}"]) <= 1.0
    results = json.load(open(out / "results.json"))
    stats = results["summary"]["retrieval / Two-tower (TFRS) / tiny"]
    assert "auc" not in stats and stats["retrieval_recall@50"][2] == 2  # mean, std, n over the two seeds
    markdown = (out / "results.md").read_text()
    header = next(line for line in markdown.splitlines() if line.startswith("| Model |")).split(" | ")
    line = next(line for line in markdown.splitlines() if line.startswith("| Two-tower (TFRS)"))
    cells = dict(zip(header, line.split(" | ")))
    assert cells["AUC"] == cells["gAUC"] == "–" and " ± " in cells["catalogue Recall@50"]
    assert "Two-tower (TFRS) ▽" not in markdown and "| Floor: most clicked items (catalogue retrieval) |" in markdown
    two_tower = [r for r in results["rows"] if r["model"] == "two_tower"]
    for r in two_tower:  # epochs chosen on validation Recall@50 over the catalogue
        curve = r["curves"]["val_retrieval_recall@50"]
        assert r["best_epoch"] == int(np.argmax(curve)) + 1 and r["validation"]["retrieval_recall@50"] == max(curve)


def test_the_catalogue_softmax_runs_over_every_item_of_the_table():
    """retrieval_negatives = "catalogue": −log softmax over q_u · c_j of every item j of the table, exactly (no
    log-q correction, a repeated item is a positive for each of its rows), against NumPy."""
    model, features = random_model()
    model.mtin_config.retrieval_negatives = "catalogue"
    query, candidate = numpy_towers(model, features)
    users, histories = [7, 3, 7], [[30, 0, 0, 0], [20, 40, 0, 0], [30, 50, 0, 0]]
    items = [10, 30, 10]
    batch = {F.USER_ID: tf.constant(users, tf.int64), F.CLICKED_ITEMS: tf.constant(histories, tf.int64),
             F.ITEM_ID: tf.constant(items, tf.int64), CANDIDATE_PROBABILITY: tf.constant([0.4, 0.2, 0.4])}
    got = float(model.compute_loss(batch))
    table = np.array([candidate(int(i)) for i in ITEM_IDS])  # [N, d]
    losses = []
    for u, h, item in zip(users, histories, items):
        logits = table @ query(u, h)
        losses.append(np.log(np.exp(logits - logits.max()).sum()) + logits.max()
                      - logits[list(ITEM_IDS).index(item)])
    np.testing.assert_allclose(got, np.mean(losses), rtol=1e-5)
    # fit logs the epoch's mean of that loss as mean_loss (the experiment's loss curve); learning rate 0 keeps the
    # weights, so the one batch's loss is the mean.
    model.compile(optimizer=tf_keras.optimizers.Adam(0.0))
    history = model.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0)
    np.testing.assert_allclose(history.history[EPOCH_LOSS][0], got, rtol=1e-5)
    model.mtin_config.retrieval_negatives = "in_batch"
    assert abs(float(model.compute_loss(batch)) - got) > 1e-3  # the in-batch loss is another number
