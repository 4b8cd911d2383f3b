"""``mtin serve``, ``mtin predict`` and ``mtin recommend`` (registered by mtin_tf.cli).

- ``mtin serve --model-base-path DIR [--port 8500] [--model-name mtin]``: the local TF Serving-compatible gRPC server
  (:mod:`mtin_tf.serving.server`) over a versioned SavedModel directory; runs until SIGTERM/SIGINT.
- ``mtin predict --target localhost:8500 --user U --candidates 1,2,3 --timestamp T [--clicked ... --clicked-times ...
  --browsed ... --browsed-times ...]``: scores every candidate; prints JSON.
- ``mtin recommend ... --top-k 10``: the same query, the k most probable candidates best first; without
  ``--candidates``, the k most probable items of the model's whole catalogue (MTIN's ``recommend`` signature), each
  with the interest row that retrieved it.

Both query commands talk to TF Serving or ``mtin serve`` alike (:class:`mtin_tf.serving.client.MTINClient`) and exit 1
on an RPC error (its status code and message on stderr), 2 on invalid arguments.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

from mtin_tf.serving import DEFAULT_MODEL_NAME, GRPC_PORT, MAX_ROWS


def _ids(text: str) -> list[int]:
    """"1,2,3" -> [1, 2, 3]; "" -> []."""
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _labels(text: str) -> dict[str, int]:
    """"stable=3,canary=4" -> {"stable": 3, "canary": 4}."""
    try:
        return {k.strip(): int(v) for k, v in (pair.split("=") for pair in text.split(",") if pair.strip())}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected label=version pairs, got {text!r}") from None


def _pairs(text: str) -> list[tuple[str, str]]:
    """"a=1,b=2" -> [("a", "1"), ("b", "2")]."""
    pairs = [pair.split("=", 1) for pair in text.split(",") if pair.strip()]
    if any(len(pair) != 2 or not pair[0].strip() for pair in pairs):
        raise argparse.ArgumentTypeError(f"expected key=value pairs, got {text!r}")
    return [(k.strip().lower(), v) for k, v in pairs]


def register_serve(subparsers) -> None:
    p = subparsers.add_parser("serve", help="serve a versioned SavedModel directory over TF Serving's gRPC API",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-base-path", required=True, help="directory of numeric version directories")
    p.add_argument("--model-name", default=DEFAULT_MODEL_NAME)
    p.add_argument("--port", type=int, default=GRPC_PORT, help="gRPC port (0: any free port, printed at start)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 to accept remote clients)")
    p.add_argument("--num-versions", type=int, default=1, help="serve the newest N versions (TF Serving's latest)")
    p.add_argument("--version-labels", type=_labels, default={}, help="label=version pairs, e.g. stable=3,canary=4")
    p.add_argument("--poll-seconds", type=float, default=1.0, help="how often to look for new versions")
    p.add_argument("--max-load-retries", type=int, default=5,
                   help="times a version that failed to load is tried again (also: whenever its directory changes)")
    p.add_argument("--load-retry-seconds", type=float, default=60.0, help="time between those retries")
    p.add_argument("--max-workers", type=int, default=16, help="Predict requests computed at once")
    p.add_argument("--max-in-flight", type=int, default=None,
                   help="Predict requests admitted at once (computing or waiting for a worker, each until its "
                        "deadline; default 4 x --max-workers); beyond: RESOURCE_EXHAUSTED")
    p.add_argument("--grace-seconds", type=float, default=10.0, help="time in-flight RPCs get after SIGTERM")
    p.add_argument("--drain-seconds", type=float, default=2.0,
                   help="after SIGTERM, how long health says NOT_SERVING while RPCs are still answered")
    p.add_argument("--max-rows", type=int, default=MAX_ROWS,
                   help="most rows (candidates, or users for score_candidates) per Predict request; more is "
                        "INVALID_ARGUMENT")
    p.add_argument("--ssl-cert", help="PEM certificate chain of the server: serve TLS only (needs --ssl-key)")
    p.add_argument("--ssl-key", help="PEM private key of --ssl-cert")
    p.add_argument("--ssl-client-ca", help="PEM CA that client certificates must be signed by (mutual TLS)")
    p.add_argument("--error-log-interval", type=float, default=1.0,
                   help="at most one log line per (method, status code) this often, in seconds (0: every failure); "
                        "every failure is counted either way")
    p.add_argument("--metrics-port", type=int, default=None,
                   help="serve Prometheus metrics at http://HOST:PORT/metrics (0: any free port, printed)")
    p.set_defaults(func=_serve)


def _serve(args) -> int:
    from mtin_tf.serving.model_store import ModelStore
    from mtin_tf.serving.server import serve, server_credentials

    if bool(args.ssl_cert) != bool(args.ssl_key) or (args.ssl_client_ca and not args.ssl_cert):
        print("mtin serve: --ssl-cert and --ssl-key go together, and --ssl-client-ca needs them", file=sys.stderr)
        return 2
    try:
        credentials = server_credentials(args.ssl_cert, args.ssl_key, args.ssl_client_ca) if args.ssl_cert else None
    except OSError as exc:
        print(f"mtin serve: cannot read the TLS files: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    store = ModelStore(args.model_name, args.model_base_path, num_versions=args.num_versions,
                       poll_seconds=args.poll_seconds, version_labels=args.version_labels,
                       max_load_retries=args.max_load_retries, load_retry_seconds=args.load_retry_seconds)
    try:
        return serve(store, args.host, args.port, max_workers=args.max_workers, max_in_flight=args.max_in_flight,
                     grace_seconds=args.grace_seconds, max_rows=args.max_rows, credentials=credentials,
                     metrics_port=args.metrics_port, drain_seconds=args.drain_seconds,
                     error_log_interval=args.error_log_interval)
    except OSError as exc:
        print(f"mtin serve: {exc}", file=sys.stderr)
        return 1


def _query_parser(subparsers, name: str, help_text: str, candidates_required: bool = True) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help=help_text, description=help_text)
    p.add_argument("--target", default=f"localhost:{GRPC_PORT}", help="host:port of TF Serving or `mtin serve`")
    p.add_argument("--model-name", default=DEFAULT_MODEL_NAME)
    p.add_argument("--version", type=int, default=None, help="model version (default: the newest served)")
    p.add_argument("--version-label", default=None)
    p.add_argument("--user", type=int, required=True, help="user id")
    p.add_argument("--candidates", type=_ids, required=candidates_required,
                   help="candidate item ids, e.g. 1,2,3" + ("" if candidates_required else
                                                             " (default: the model's whole catalogue)"))
    p.add_argument("--timestamp", type=int, required=True, help="time of the impression (unix seconds)")
    p.add_argument("--clicked", type=_ids, default=[], help="clicked item ids, oldest first")
    p.add_argument("--clicked-times", type=_ids, default=[], help="their timestamps")
    p.add_argument("--browsed", type=_ids, default=[], help="browsed-not-clicked item ids, oldest first")
    p.add_argument("--browsed-times", type=_ids, default=[], help="their timestamps")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per RPC attempt")
    p.add_argument("--ssl-root-ca", help="PEM CA that signed the server's certificate: connect over TLS")
    p.add_argument("--ssl-client-cert", help="PEM client certificate for mutual TLS (needs --ssl-client-key)")
    p.add_argument("--ssl-client-key", help="PEM private key of --ssl-client-cert")
    p.add_argument("--metadata", type=_pairs, default=[], help="call metadata sent with every RPC, e.g. "
                   r"authorization=Bearer\ TOKEN,x-tenant=a (keys lower case)")
    return p


def register_predict(subparsers) -> None:
    p = _query_parser(subparsers, "predict", "score one user's candidates through a TF Serving gRPC endpoint")
    p.set_defaults(func=lambda args: _query(args, top_k=None))


def register_recommend(subparsers) -> None:
    p = _query_parser(subparsers, "recommend", "top-k items (of the candidates given, or of the whole catalogue) "
                      "for one user through a gRPC endpoint", candidates_required=False)
    p.add_argument("--top-k", type=int, default=10)
    p.set_defaults(func=lambda args: _query(args, top_k=args.top_k))


def _query(args, top_k: int | None) -> int:
    import grpc

    from mtin_tf.serving.client import MTINClient, channel_credentials

    try:
        credentials = None
        if args.ssl_root_ca or args.ssl_client_cert:
            credentials = channel_credentials(args.ssl_root_ca, args.ssl_client_cert, args.ssl_client_key)
        with MTINClient(args.target, args.model_name, args.timeout, version=args.version,
                        version_label=args.version_label, credentials=credentials,
                        metadata=args.metadata) as client:
            histories = dict(clicked=args.clicked, clicked_times=args.clicked_times, browsed=args.browsed,
                             browsed_times=args.browsed_times)
            if args.candidates is None:  # recommend from the catalogue: the model retrieves and ranks
                prediction = client.recommend(args.user, timestamp=args.timestamp, k=top_k, **histories)
            else:
                prediction = client.predict(args.user, args.candidates, args.timestamp, **histories)
    except grpc.RpcError as exc:
        print(f"mtin {args.command}: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as exc:
        print(f"mtin {args.command}: {exc}", file=sys.stderr)
        return 2
    if top_k is not None and args.candidates is not None:
        prediction = prediction.top(top_k)
    print(json.dumps(prediction_json(prediction, args.model_name, args.user, args.timestamp)))
    return 0


def prediction_json(prediction, model_name: str, user_id: int, timestamp: int) -> dict:
    """The JSON document ``mtin predict`` / ``mtin recommend`` print: the user's s x s group weights (null for a
    model without them) and one entry per candidate, in the prediction's order, with its click probability and
    logit (and, recommended from the catalogue, the interest row that retrieved it)."""
    weights, rows = prediction.group_weights, prediction.interest_row
    return {"model": model_name, "model_version": prediction.model_version, "user_id": user_id,
            "timestamp": timestamp, "group_weights": None if weights is None else weights[0].tolist(),
            "candidates": [{"item_id": int(item), "click_probability": float(p), "logit": float(z),
                            **({} if rows is None else {"interest_row": int(rows[i])})}
                           for i, (item, p, z) in enumerate(zip(prediction.item_ids, prediction.click_probability,
                                                                prediction.logit))]}
