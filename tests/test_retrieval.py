"""Recommending from the whole catalogue (mtin_tf.retrieval, the ``recommend`` signature) against a loop reference."""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from mtin_tf import features as F
from mtin_tf.baselines import build_din
from mtin_tf.config import MTINConfig
from mtin_tf.export import export_saved_model
from mtin_tf.model import build_mtin, candidate_scorer, set_exposure_prior, user_encoder
from mtin_tf.retrieval import MAX_RECOMMEND_K
from mtin_tf.retrieval_task import impression_share
from mtin_tf.signatures import RECOMMEND_SIGNATURE

L, NUM_ITEMS = 6, 40
# What production exports: attention readout, id embeddings, item bias, anchored memory, routing under XLA, the
# retrieval head.
CONFIG = MTINConfig(embedding_dim=8, num_masks=2, num_groups=3, max_history=L, readout="attention",
                    use_id_embedding=True, use_item_bias=True, pretrain_memory=True, memory_anchors=2, jit_routing=True)


def catalogue_table():
    """Raw item ids neither dense nor sorted (a table-order mix-up shows), their features, the users."""
    rng = np.random.default_rng(0)
    return (rng.permutation(np.arange(1, NUM_ITEMS + 1)) * 1000, rng.normal(size=(NUM_ITEMS, 5)).astype(np.float32),
            np.arange(1, 6) * 7)


def users(item_ids):
    """Four users: two with histories, one with none, one unknown to the model; the first has clicked L items."""
    items = np.sort(item_ids)
    clicked = np.zeros([4, L], np.int64)
    clicked[0] = items[[3, 9, 14, 20, 27, 33]]
    clicked[1, :2] = items[[5, 38]]
    clicked[3, :3] = items[[0, 1, 2]]
    browsed = np.zeros([4, L], np.int64)
    browsed[0, :3] = items[[7, 8, 30]]
    browsed[3, :1] = items[[11]]
    times = lambda ids: np.where(ids > 0, 1_000 + np.arange(L)[None] * 10, 0).astype(np.int64)
    return {F.USER_ID: np.array([7, 14, 21, 999], np.int64), F.TIMESTAMP: np.full(4, 5_000, np.int64),
            F.CLICKED_ITEMS: clicked, F.CLICKED_TIMES: times(clicked),
            F.BROWSED_ITEMS: browsed, F.BROWSED_TIMES: times(browsed)}


def impressions(item_ids):
    """Training candidates with a skewed popularity (some items shown often, four never): what the exposure prior
    is set from."""
    rng = np.random.default_rng(4)
    shown = np.sort(item_ids)[4:]
    return rng.choice(shown, 400, p=np.arange(1, len(shown) + 1) ** 2.0 / (np.arange(1, len(shown) + 1) ** 2.0).sum())


def log_share(item_ids, candidates):
    """log q_j of each id in ``item_ids``: its share of ``candidates``, half the smallest share when never shown."""
    ids, counts = np.unique(candidates, return_counts=True)
    count = dict(zip(ids.tolist(), counts.tolist()))
    return {int(i): float(np.log(count.get(int(i), 0.5 * counts.min()) / len(candidates))) for i in item_ids}


def _export(config, directory):
    """An MTIN with trained-looking id embeddings (and W_r, W_h, e_u far from 0 when it has the retrieval head, the
    history query, the user's retrieval row), exported and reloaded with tf.saved_model.load: (item table, model,
    loaded)."""
    table = catalogue_table()
    model = build_mtin(config, *table)
    rng = np.random.default_rng(3)
    embed = model.get_layer("item_embedding")
    embed.id_embedding.assign(rng.normal(scale=0.3, size=embed.id_embedding.shape))
    for name in ("retrieval_head", "history_query"):
        if getattr(config, name):
            head = model.get_layer(name)
            head.kernel.assign(rng.normal(scale=0.5, size=head.kernel.shape))
    if config.retrieval_user_row:  # e_u of every row, the unknown users' shared row 0 included
        user_rows = model.get_layer("retrieval_user").memory
        user_rows.assign(rng.normal(scale=0.5, size=user_rows.shape))
    set_exposure_prior(model, *impression_share(impressions(table[0])))
    model.get_layer("exposure_prior").gamma.assign(GAMMA)  # as if the retrieval objective had learnt it
    path = export_saved_model(model, str(directory), version=1)
    return table, model, tf.saved_model.load(path)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return _export(CONFIG, tmp_path_factory.mktemp("export"))


@pytest.fixture(scope="module")
def exported_without_head(tmp_path_factory):
    """As ``exported``, without the retrieval head (config.retrieval_head): the rows u_p are the queries."""
    return _export(dataclasses.replace(CONFIG, retrieval_head=False), tmp_path_factory.mktemp("export_rows"))


@pytest.fixture(scope="module")
def exported_with_history_query(tmp_path_factory):
    """As ``exported``, with the history query (config.history_query): s + 1 queries, and the user's retrieval row
    (config.retrieval_user_row) added to each."""
    return _export(dataclasses.replace(CONFIG, history_query=True, retrieval_user_row=True),
                   tmp_path_factory.mktemp("export_history"))


GAMMA = 0.7  # the exposure prior's weight γ in the fixture's model


def reference(model, item_ids, users, k):
    """The loop this module's docstring describes: each interest row's top-k of the items not clicked in the user's
    history by u_p · x_j + γ log q_j (log q_j: the exposure prior, from the fixture's impressions), each item once
    with the row that scored it highest, ranked by that score; with each item's click probability. With the
    retrieval head, the query of row p is u_p (I + W_r) in place of u_p; with the history query, one more query, row
    s: x̄ (I + W_h), x̄ the mean of x_j over the user's clicked items known to the table (0 for none); with the user's
    retrieval row, e_u (row 0 for a user unknown to the model) added to every query."""
    prior = log_share(item_ids, impressions(item_ids))
    log_q = GAMMA * np.array([prior[int(i)] for i in item_ids])
    embed = model.get_layer("item_embedding")
    table, _ = embed.projected_table()  # x_j in table order: row j is item item_ids[j]
    rows = user_encoder(model)(users)
    scorer = candidate_scorer(model)
    names = {layer.name for layer in model.layers}
    kernel = (model.get_layer("retrieval_head").kernel.numpy() if "retrieval_head" in names
              else np.zeros([embed.embedding_dim] * 2))
    position = {int(i): j for j, i in enumerate(item_ids)}
    out = []
    for u in range(len(users[F.USER_ID])):
        clicked = set(users[F.CLICKED_ITEMS][u][users[F.CLICKED_ITEMS][u] > 0].tolist())
        best = {}  # item id → (retrieval score, row)
        queries = rows[F.OUTPUT_POSITIVE_ROWS][u].numpy()
        queries = queries + queries @ kernel
        if "history_query" in names:
            known = [position[i] for i in users[F.CLICKED_ITEMS][u].tolist() if i in position]
            mean = table[known].mean(0) if known else np.zeros(embed.embedding_dim, np.float32)
            queries = np.concatenate([queries, [mean + mean @ model.get_layer("history_query").kernel.numpy()]])
        if "retrieval_user" in names:
            user_rows = model.get_layer("retrieval_user")
            known_users = user_rows.keys.numpy().tolist()  # sorted raw ids: row i + 1 is user known_users[i]
            user = int(users[F.USER_ID][u])
            queries = queries + user_rows.memory.numpy()[known_users.index(user) + 1 if user in known_users else 0]
        for p, query in enumerate(queries):
            scores = table @ query + log_q
            allowed = [j for j in np.argsort(-scores, kind="stable") if item_ids[j] not in clicked][:k[u]]
            for j in allowed:
                if item_ids[j] not in best or scores[j] > best[item_ids[j]][0]:
                    best[int(item_ids[j])] = (float(scores[j]), p)
        ranked = sorted(best, key=lambda i: -best[i][0])[:k[u]]
        pool = np.array(ranked, np.int64)
        state = {key: rows[key][u:u + 1] for key in F.USER_STATE if key in rows}  # the rows (and click level)
        scored = scorer(state | {F.CANDIDATE_IDS: pool[None]})
        probability = scored[F.OUTPUT_PROBABILITY].numpy()[0]
        out.append([(int(i), float(probability[n]), best[int(i)][1], best[int(i)][0]) for n, i in enumerate(pool)])
    return out


@pytest.mark.parametrize("fixture", ["exported", "exported_without_head", "exported_with_history_query"])
def test_recommend_signature_matches_the_loop_reference(fixture, request):
    table, model, saved = request.getfixturevalue(fixture)
    x = users(table[0])
    k = np.array([5, 3, 37, 1], np.int64)
    x[F.CLICKED_ITEMS][2, :4] = np.sort(table[0])[[1, 2, 3, 4]]  # 36 items left for user 2, who asks for 37
    x[F.CLICKED_TIMES][2, :4] = [100, 200, 300, 400]
    got = saved.signatures[RECOMMEND_SIGNATURE](**{key: tf.constant(v) for key, v in x.items()}, k=tf.constant(k))
    assert got[F.OUTPUT_ITEM_IDS].shape == (4, 37) and got[F.OUTPUT_ITEM_IDS].dtype == tf.int64
    want = reference(model, table[0], x, k)
    ids, prob = got[F.OUTPUT_ITEM_IDS].numpy(), got[F.OUTPUT_PROBABILITY].numpy()
    row, retrieval = got[F.OUTPUT_INTEREST_ROW].numpy(), got[F.OUTPUT_RETRIEVAL_SCORE].numpy()
    for u, expected in enumerate(want):
        n = len(expected)
        assert n == min(k[u], NUM_ITEMS - len(set(x[F.CLICKED_ITEMS][u][x[F.CLICKED_ITEMS][u] > 0])))
        np.testing.assert_array_equal(ids[u, :n], [e[0] for e in expected])
        np.testing.assert_allclose(prob[u, :n], [e[1] for e in expected], atol=1e-5)
        np.testing.assert_array_equal(row[u, :n], [e[2] for e in expected])
        np.testing.assert_allclose(retrieval[u, :n], [e[3] for e in expected], rtol=1e-4, atol=1e-4)
        # Slots past the user's k, or past what the catalogue holds, are empty.
        assert (ids[u, n:] == 0).all() and (prob[u, n:] == 0).all() and (row[u, n:] == -1).all()
        assert np.isneginf(got[F.OUTPUT_LOGIT].numpy()[u, n:]).all()
    assert len(want[2]) == 36  # 40 items, 4 clicked: 36 to recommend of the 37 asked for
    # The list is not ranked by click probability (some user's probabilities rise down the list), and the exposure
    # prior changes the retrieval scores: without log q_j, some user's list would be in another order.
    assert any(np.any(np.diff(prob[u, :len(e)]) > 0) for u, e in enumerate(want))
    log_q = log_share(table[0], impressions(table[0]))
    without_prior = [np.array([e[3] - GAMMA * log_q[e[0]] for e in expected]) for expected in want]
    assert any(np.any(np.diff(score) > 0) for score in without_prior)
    # Probabilities and logits agree with the candidate-list path of the same model.
    np.testing.assert_allclose(tf.sigmoid(got[F.OUTPUT_LOGIT]).numpy()[:, :3], prob[:, :3], atol=1e-6)
    assert ("retrieval_head" in {layer.name for layer in model.layers}) == (fixture != "exported_without_head")
    # The history query (row s) retrieved some of the items it was asked for, and only with it.
    assert (row == CONFIG.num_groups).any() == (fixture == "exported_with_history_query")
    if fixture == "exported":  # the head's queries, not the rows, scored the catalogue
        table_x, _ = model.get_layer("item_embedding").projected_table()
        position = {int(i): j for j, i in enumerate(table[0])}
        rows = user_encoder(model)(x)[F.OUTPUT_POSITIVE_ROWS].numpy()
        by_rows = [[(rows[u] @ table_x[position[e[0]]]).max() + GAMMA * log_q[e[0]] for e in expected]
                    for u, expected in enumerate(want)]
        assert not np.allclose(np.concatenate(by_rows), np.concatenate([r[:len(e)] for r, e in zip(retrieval, want)]),
                               atol=1e-2)


def test_recommend_never_returns_a_clicked_item_nor_an_item_twice(exported):
    table, _, saved = exported
    x = users(table[0])
    got = saved.signatures[RECOMMEND_SIGNATURE](**{key: tf.constant(v) for key, v in x.items()},
                                                k=tf.constant([20, 20, 20, 20], tf.int64))
    for u, ids in enumerate(got[F.OUTPUT_ITEM_IDS].numpy()):
        assert len(set(ids.tolist())) == 20 and not set(ids.tolist()) & set(x[F.CLICKED_ITEMS][u].tolist())
        assert set(ids.tolist()) <= set(table[0].tolist())
        assert (np.diff(got[F.OUTPUT_RETRIEVAL_SCORE].numpy()[u]) <= 0).all()  # best first


@pytest.mark.parametrize("k", [0, MAX_RECOMMEND_K + 1])
def test_recommend_rejects_k_out_of_range(exported, k):
    table, _, saved = exported
    x = users(table[0])
    with pytest.raises(tf.errors.InvalidArgumentError, match="k must be at"):
        saved.signatures[RECOMMEND_SIGNATURE](**{key: tf.constant(v) for key, v in x.items()},
                                              k=tf.constant([3, k, 3, 3], tf.int64))


def test_only_mtin_exports_recommend(tmp_path):
    din = build_din(CONFIG, *catalogue_table())
    saved = tf.saved_model.load(export_saved_model(din, str(tmp_path), version=1))
    assert RECOMMEND_SIGNATURE not in saved.signatures


@pytest.mark.parametrize("projected", [False, True])
def test_catalogue_is_every_item_embedding_with_its_id(exported, projected):
    from mtin_tf.export import serving_model

    table, model, _ = exported
    layer = (serving_model(model) if projected else model).get_layer("item_embedding")
    x, ids = layer.catalogue()
    np.testing.assert_array_equal(ids.numpy(), table[0])  # table order, raw ids
    np.testing.assert_allclose(x.numpy(), layer(tf.constant(table[0]))[0].numpy(), atol=1e-5)


def _split(rows):
    """Model-input arrays from (user, item, time, label, clicked history) rows (L = 3, browsed empty)."""
    out = {F.USER_ID: [], F.ITEM_ID: [], F.TIMESTAMP: [], F.LABEL: [], F.CLICKED_ITEMS: [], F.CLICKED_TIMES: [],
           F.BROWSED_ITEMS: [], F.BROWSED_TIMES: []}
    for user, item, time, label, clicked in rows:
        for key, value in ((F.USER_ID, user), (F.ITEM_ID, item), (F.TIMESTAMP, time), (F.LABEL, label)):
            out[key].append(value)
        out[F.CLICKED_ITEMS].append(list(clicked) + [0] * (3 - len(clicked)))
        out[F.CLICKED_TIMES].append([1] * len(clicked) + [0] * (3 - len(clicked)))
        out[F.BROWSED_ITEMS].append([0] * 3)
        out[F.BROWSED_TIMES].append([0] * 3)
    return {key: np.asarray(value, np.int64) for key, value in out.items()}


def test_catalogue_queries_ask_each_user_once_excluding_everything_clicked_before_test():
    from mtin_tf.retrieval import catalogue_queries, popular_items

    train = _split([(1, 10, 1, 1, []), (1, 11, 2, 0, [10]), (2, 12, 1, 1, []), (2, 10, 2, 1, [12]),
                    (3, 13, 1, 0, [])])
    validation = _split([(1, 14, 3, 1, [10])])
    test = _split([(2, 15, 9, 1, [12, 10]), (1, 10, 8, 1, [10, 14]), (1, 16, 5, 1, [10, 14]),
                   (1, 17, 6, 0, [10, 14]), (2, 11, 3, 1, [12, 10]), (4, 18, 4, 0, [])])
    users, exclusions, relevant_users, relevant_items = catalogue_queries([train, validation], test)
    np.testing.assert_array_equal(users[F.USER_ID], [1, 2, 4])
    np.testing.assert_array_equal(users[F.TIMESTAMP], [5, 3, 4])  # each user's first test impression
    np.testing.assert_array_equal(exclusions, [[10, 14], [10, 12], [0, 0]])
    # User 1's click on 10 in test was clicked before (excluded, so not relevant); user 4 clicked nothing.
    assert sorted(zip(relevant_users.tolist(), relevant_items.tolist())) == [(0, 16), (1, 11), (1, 15)]
    # Popularity: 10 (clicked twice) before 12 and 14 (once each, smaller id first); each user's exclusions left out.
    np.testing.assert_array_equal(popular_items([train, validation], exclusions, 2), [[12, 0], [14, 0], [10, 12]])


def test_catalogue_metrics_score_the_recommender_and_the_popularity_floor(exported):
    from mtin_tf.metrics import retrieval_recall_hit_rate
    from mtin_tf.retrieval import catalogue_metrics, catalogue_queries, popularity_floor_metrics, recommender

    table, model, _ = exported
    items = np.sort(table[0])
    rng = np.random.default_rng(5)
    rows = lambda n, t0: [(7 * int(u), int(i), t0 + j, int(rng.integers(0, 2)), list(rng.choice(items, 3)))
                          for j, (u, i) in enumerate(zip(rng.integers(1, 6, n), rng.choice(items, n)))]
    before, test = [_split(rows(60, 0))], _split(rows(30, 100))
    got = catalogue_metrics(model, before, test, ks=(2, 5), batch_size=2)  # batches of two users
    users, exclusions, relevant_users, relevant_items = catalogue_queries(before, test)
    x = {key: tf.constant(value) for key, value in users.items()}
    want = recommender(model)(x, tf.fill([len(exclusions)], 5), tf.constant(exclusions))[F.OUTPUT_ITEM_IDS]
    expected = retrieval_recall_hit_rate(want.numpy(), relevant_users, relevant_items, (2, 5))
    assert got == {f"retrieval_{key}": value for key, value in expected.items()} and got["retrieval_users"] > 0
    assert set(popularity_floor_metrics(before, test, ks=(2, 5))) == set(got)


def test_the_server_warms_recommend_up_with_a_valid_request(exported):
    """`mtin serve` calls every signature once before a version serves; recommend's k = 0 would be rejected."""
    from mtin_tf.serving.model_store import warm_up

    _, _, saved = exported

    class Recording:
        def __init__(self, fn):
            self.fn, self.structured_input_signature, self.out = fn, fn.structured_input_signature, None

        def __call__(self, **inputs):
            self.out = self.fn(**inputs)
            return self.out

    signature = Recording(saved.signatures[RECOMMEND_SIGNATURE])
    warm_up({RECOMMEND_SIGNATURE: signature})
    assert signature.out is not None and signature.out[F.OUTPUT_ITEM_IDS].shape == (1, 1)


def test_exposure_prior_is_the_log_impression_share_set_at_training(tiny_planted):
    """train_mtin fills the prior from the training candidates; the fused model outputs log q of each candidate
    (half the smallest share for an item never shown, and for an unknown id)."""
    from mtin_tf.data.canonical import read_item_features
    from mtin_tf.data.examples import read_split_arrays
    from mtin_tf.train import train_mtin

    train = read_split_arrays(tiny_planted["examples"], 6)["train"]
    items = read_item_features(tiny_planted["items"])
    item_ids = items.item_ids
    config = MTINConfig(embedding_dim=4, num_masks=2, num_groups=2, max_history=6, batch_size=64, epochs=1)
    model, _ = train_mtin(config, train, item_ids, items.features, verbose=0)
    want = log_share(item_ids, train[F.ITEM_ID])
    probe = {key: value[:8] for key, value in train.items() if key != F.LABEL}
    probe[F.ITEM_ID] = np.concatenate([item_ids[:7], [10**9]])  # the last: an id the model does not know
    got = model(probe)[F.OUTPUT_EXPOSURE].numpy()
    np.testing.assert_allclose(got[:7], [want[int(i)] for i in item_ids[:7]], rtol=1e-6)
    smallest = np.unique(train[F.ITEM_ID], return_counts=True)[1].min()
    np.testing.assert_allclose(got[7], np.log(0.5 * smallest / len(train[F.ITEM_ID])), rtol=1e-6)
    # log q is a statistic of the data, not a parameter: only its weight γ trains.
    layer = model.get_layer("exposure_prior")
    assert [w.name.split("/")[-1] for w in layer.trainable_weights] == ["gamma:0"]


def _variables_by_use(function, variables) -> tuple:
    """(names of ``variables`` that ``function`` gathers rows from with ResourceGather, names it reads whole with
    ReadVariableOp), following each variable's handle from the graph's captures through Identity ops and into the
    functions it calls (TFRS's top-k runs in one of its own)."""
    name_of = {id(v.handle): v.name for v in variables}
    graph_def = function.graph.as_graph_def()
    library = {f.signature.name: f for f in graph_def.library.function}
    gathered, read = set(), set()

    def walk(nodes, origin):  # origin: {tensor name in this scope: variable name}
        for node in nodes:
            inputs = [origin.get(i.split(":")[0]) for i in node.input if not i.startswith("^")]
            if node.op in ("ResourceGather", "ReadVariableOp") and inputs and inputs[0]:
                (gathered if node.op == "ResourceGather" else read).add(inputs[0])
            elif node.op == "Identity" and inputs and inputs[0]:
                origin[node.name] = inputs[0]
            elif "f" in node.attr and node.attr["f"].func.name in library:
                callee = library[node.attr["f"].func.name]
                args = {a.name: v for a, v in zip(callee.signature.input_arg, inputs) if v}
                if args:
                    walk(callee.node_def, args)

    walk(graph_def.node, {internal.name.split(":")[0]: name_of[id(external)]
                          for external, internal in function.graph.captures if id(external) in name_of})
    return gathered, read


def test_no_served_table_is_both_gathered_from_and_read_whole(exported):
    """A ResourceGather switches a variable to copy-on-read for the server's lifetime: every later whole read (the
    catalogue scan of recommend) then copies it — the whole item table per request. Across every signature of the
    served model, no variable may be gathered from that is also read whole; and the catalogue scan does read the
    item table whole (so the check looks where the copies would happen)."""
    from mtin_tf.export import serving_model
    from mtin_tf.signatures import serving_signatures

    served = serving_model(exported[1])
    gathered, read = set(), set()
    for function in serving_signatures(served, L).values():
        g, r = _variables_by_use(function, served.weights)
        gathered |= g
        read |= r
    table = served.get_layer("item_embedding").table.name
    assert table in read
    assert not gathered & read, f"gathered from and read whole: {sorted(gathered & read)}"
