"""The exported SavedModel against what `tensorflow_model_server` needs, short of running the binary (not available
here): no Python ops anywhere in its graphs, only ops core TensorFlow registers, and every signature loads and runs in
a fresh process through the TF1 graph loader in a Session (how TF Serving loads a SavedModel), XLA-compiled routing
included."""
import json
import os
import subprocess
import sys

import numpy as np
from serving_support import L, exported
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.framework import op_def_registry

from mtin_tf import features as F
from mtin_tf.serving.client import candidate_inputs, raw_inputs
from mtin_tf.signatures import DEFAULT_SIGNATURE, RAW_SIGNATURE, SCORE_SIGNATURE

PYTHON_OPS = {"PyFunc", "PyFuncStateless", "EagerPyFunc"}
USER, NOW = 14, 10_000
HISTORY = dict(clicked=[1000, 2000, 3000], clicked_times=[10, 20, 30], browsed=[4000], browsed_times=[25])
CANDIDATES = [2000, 7000, 40000]

SESSION_RUN = r"""
import json, sys
import numpy as np
import tensorflow as tf
path, requests = sys.argv[1], json.loads(sys.argv[2])
results = {}
with tf.compat.v1.Session(graph=tf.Graph()) as session:
    meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], path)
    for signature, inputs in requests.items():
        sig = meta.signature_def[signature]
        feed = {sig.inputs[k].name: np.asarray(v, np.int64) for k, v in inputs.items()}
        names = sorted(sig.outputs)
        values = session.run([sig.outputs[k].name for k in names], feed_dict=feed)
        results[signature] = {k: np.asarray(v).tolist() for k, v in zip(names, values)}
print(json.dumps(results))
"""


def _ops(path):
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        proto = saved_model_pb2.SavedModel.FromString(f.read())
    graph = proto.meta_graphs[0].graph_def
    ops = {node.op for node in graph.node}
    for function in graph.library.function:
        ops |= {node.op for node in function.node_def}
    functions = {function.signature.name for function in graph.library.function}
    return ops - functions, proto.meta_graphs[0]


def test_exported_graphs_hold_only_core_ops_and_no_python_ops():
    _, path = exported(1)
    ops, meta = _ops(path)
    assert not ops & PYTHON_OPS
    unregistered = sorted(op for op in ops if op_def_registry.get(op) is None)
    assert unregistered == []
    assert {DEFAULT_SIGNATURE, RAW_SIGNATURE, SCORE_SIGNATURE} <= set(meta.signature_def)


def test_every_signature_runs_through_the_tf1_session_loader_in_a_fresh_process():
    model, path = exported(1)
    rows = raw_inputs(USER, CANDIDATES, NOW, L, **HISTORY)
    want = {k: v.numpy() for k, v in model(rows).items()}
    requests = {RAW_SIGNATURE: rows, SCORE_SIGNATURE: candidate_inputs(USER, CANDIDATES, NOW, L, **HISTORY)}
    out = subprocess.run([sys.executable, "-c", SESSION_RUN, path,
                          json.dumps({name: {k: v.tolist() for k, v in inputs.items()}
                                      for name, inputs in requests.items()})],
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(results) == set(requests)
    for got in results.values():
        np.testing.assert_allclose(np.reshape(got[F.OUTPUT_LOGIT], -1), want[F.OUTPUT_LOGIT], atol=1e-5)
        np.testing.assert_allclose(np.reshape(got[F.OUTPUT_GROUP_WEIGHTS], (-1, 3, 3))[0],
                                   want[F.OUTPUT_GROUP_WEIGHTS][0], atol=1e-5)
