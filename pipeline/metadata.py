"""What ML Metadata recorded about the latest run of a pipeline: per-component state and wall time, output URIs."""
from __future__ import annotations


def _store(metadata_path: str):
    from ml_metadata import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = metadata_path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return metadata_store.MetadataStore(config)


def latest_run_executions(metadata_path: str):
    """(store, [(component id, execution)]) of the latest pipeline run in a SQLite MLMD file, in start order."""
    store = _store(metadata_path)
    runs = sorted(store.get_contexts_by_type("pipeline_run"), key=lambda c: c.create_time_since_epoch)
    if not runs:
        return store, []
    nodes = {c.id: c.name.split(".", 1)[-1] for c in store.get_contexts_by_type("node")}
    out = []
    for execution in sorted(store.get_executions_by_context(runs[-1].id), key=lambda e: e.create_time_since_epoch):
        node = next((nodes[c.id] for c in store.get_contexts_by_execution(execution.id) if c.id in nodes),
                    execution.name)
        out.append((node, execution))
    return store, out


def component_timings(metadata_path: str) -> list:
    """[(component id, seconds, state)] of the latest run; state is COMPLETE, CACHED, FAILED, ..."""
    from ml_metadata.proto import metadata_store_pb2

    _, executions = latest_run_executions(metadata_path)
    return [(node, (e.last_update_time_since_epoch - e.create_time_since_epoch) / 1000.0,
             metadata_store_pb2.Execution.State.Name(e.last_known_state)) for node, e in executions]


def run_outputs(metadata_path: str) -> dict:
    """{component id: {output key: [artifact uri, ...]}} of the latest run (cached executions included)."""
    from ml_metadata.proto import metadata_store_pb2

    store, executions = latest_run_executions(metadata_path)
    out = {}
    for node, execution in executions:
        events = [e for e in store.get_events_by_execution_ids([execution.id])
                  if e.type in (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)]
        artifacts = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in events])}
        for event in events:
            key = event.path.steps[0].key if event.path.steps else ""
            out.setdefault(node, {}).setdefault(key, []).append(artifacts[event.artifact_id].uri)
    return out
