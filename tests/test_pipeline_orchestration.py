"""Pipeline definition without a full run: Kubeflow spec, Airflow DagBag, data validation on bad rows, CLI, GPU path."""
import json
import os
import subprocess
import sys

import pytest

from mtin_tf.pipeline.pipeline import COMPONENT_IDS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_kubeflow_spec_loads_with_kfp_lists_every_component_and_requests_gpus_for_the_trainer(tmp_path):
    from mtin_tf.cli import main
    from mtin_tf.pipeline.runners.kubeflow import IMAGE_SCHEMAS_DIR, spec_task_names

    out = tmp_path / "mtin_kfp.json"
    assert main(["pipeline", "compile-kubeflow", "--output", str(out), "--image", "example.org/mtin-tf:test",
                 "--gpus", "2", "--gpu-type", "NVIDIA_TESLA_V100", "--refit"]) == 0
    tasks = spec_task_names(str(out))
    # KFP compiles the baseline Resolver into one resolver task per channel ("LatestBlessedModel-model-resolver").
    assert {next(c for c in COMPONENT_IDS if t == c or t.startswith(c + "-")) for t in tasks} == set(COMPONENT_IDS)
    executors = json.loads(out.read_text())["pipelineSpec"]["deploymentSpec"]["executors"]
    trainer = executors["Trainer_executor"]["container"]
    assert trainer["image"] == "example.org/mtin-tf:test"
    assert trainer["resources"]["accelerator"] == {"type": "NVIDIA_TESLA_V100", "count": "2"}
    assert all("accelerator" not in e.get("container", {}).get("resources", {})
               for name, e in executors.items() if name != "Trainer_executor")
    spec = out.read_text()  # ImportSchemaGen reads the schemas of the package installed in the image
    assert '{\\"mtin_config\\": {}, \\"refit\\": true}' in spec  # the Trainer's custom_config
    for rel in ("interactions/schema.pbtxt", "examples/schema.pbtxt"):
        assert f"{IMAGE_SCHEMAS_DIR}/{rel}" in spec
    assert REPO not in spec


DAGBAG = r"""
import json, os, sys
from airflow.models import DagBag
bag = DagBag(dag_folder=sys.argv[1], include_examples=False)
dag = bag.dags.get("mtin")
print(json.dumps({"errors": {k: str(v)[-2000:] for k, v in bag.import_errors.items()},
                  "tasks": sorted(t.task_id for t in dag.tasks) if dag else None}))
"""


def test_airflow_dagbag_loads_the_dag_without_import_errors(tmp_path):
    home, dags = tmp_path / "airflow", tmp_path / "dags"
    # No TF_USE_LEGACY_KERAS: the DAG file imports mtin_tf before TensorFlow, which sets it.
    env = {**{k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}, "AIRFLOW_HOME": str(home),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "600",
           "AIRFLOW__CORE__DAGS_FOLDER": str(dags)}
    airflow = os.path.join(os.path.dirname(sys.executable), "airflow")
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True, timeout=600)
    mtin = [sys.executable, "-m", "mtin_tf.cli", "pipeline", "airflow-dag", "--dags-folder", str(dags),
            "--run-dir", str(tmp_path / "run")]
    subprocess.run(mtin, env=env, check=True, capture_output=True, timeout=600)
    out = subprocess.run([sys.executable, "-c", DAGBAG, str(dags)], env=env, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["errors"] == {}
    assert result["tasks"] == sorted(COMPONENT_IDS)


BAD_CSV = """user_id,item_id,timestamp,click
1,10,100,1
1,11,200,0
2,10,150,1
abc,12,300,1
2,-5,400,0
3,13,,1
3,14,500,2
"""


def test_bad_rows_give_a_clear_anomaly_report_that_stops_the_run(tmp_path):
    import tensorflow_data_validation as tfdv

    from mtin_tf.pipeline.pipeline import INTERACTIONS_SCHEMA, SCHEMAS_DIR
    from mtin_tf.pipeline.validation import DataValidationError, check_anomalies

    path = tmp_path / "interactions.csv"
    path.write_text(BAD_CSV)
    # The same CSV decoder as CsvExampleGen, then ExampleValidator's validation against schemas/interactions.
    stats = tfdv.generate_statistics_from_csv(str(path))
    schema = tfdv.load_schema_text(os.path.join(SCHEMAS_DIR, INTERACTIONS_SCHEMA))
    anomalies = tfdv.validate_statistics(stats, schema)
    with pytest.raises(DataValidationError) as err:
        check_anomalies({"all": anomalies}, max_anomalous_features=0)
    message = str(err.value)
    for feature in ("user_id", "item_id", "timestamp", "click"):
        assert f"feature {feature!r}" in message, message
    assert "Fix the input" in message
    # Above the threshold only: the same anomalies pass when 4 anomalous features are allowed.
    assert len(check_anomalies({"all": anomalies}, max_anomalous_features=4)) == 4


def test_a_pipeline_run_on_bad_rows_stops_at_validation_with_the_report(tmp_path):
    """ExampleGen → StatisticsGen → ExampleValidator → HistoryGen on the bad CSV (no training)."""
    import numpy as np

    from mtin_tf.data.canonical import write_item_features
    from mtin_tf.data.report import BadInputError
    from mtin_tf.pipeline.config import PipelineConfig
    from mtin_tf.pipeline.runners.local import run_local
    from mtin_tf.pipeline.validation import DataValidationError

    data = tmp_path / "data"
    data.mkdir()
    (data / "interactions.csv").write_text(BAD_CSV)
    write_item_features(str(data / "item_features.npz"), item_ids=np.arange(1, 20), features=np.ones((19, 4)))
    up_to_history = PipelineConfig(stop_after="HistoryGen")
    with pytest.raises(DataValidationError, match="anomalous feature") as err:
        run_local(str(data), str(tmp_path / "run"), up_to_history)
    assert "feature 'user_id'" in str(err.value) and "feature 'click'" in str(err.value)
    # Lines with the wrong number of fields (CsvExampleGen cannot parse them) are left out of the staged copy and
    # counted by file:line; --strict stops at the first.
    (data / "interactions.csv").write_text(BAD_CSV + "4,15,600,1,extra\n4,16\n")
    with pytest.raises(BadInputError, match=r"malformed_row at .*interactions.csv:9: 5 fields"):
        run_local(str(data), str(tmp_path / "strict"), up_to_history, strict=True)
    with pytest.raises(DataValidationError, match="anomalous feature"):  # the bad values still reach validation
        run_local(str(data), str(tmp_path / "run"), up_to_history)
    report = json.loads((tmp_path / "run" / "inputs" / "staging_report.json").read_text())
    assert report["bad_input"]["malformed_row"]["count"] == 1 and report["bad_input"]["missing_field"]["count"] == 1
    first = report["bad_input"]["missing_field"]["examples"][0]
    assert first.endswith("interactions.csv:10: 2 fields, the header has 4")
    staged = (tmp_path / "run" / "inputs" / "interactions" / "interactions.csv").read_text()
    assert staged == BAD_CSV  # every well-formed line kept, byte for byte


def test_history_component_counts_unreadable_rows_instead_of_crashing():
    import tensorflow as tf

    from mtin_tf.pipeline.components.history import history_bucket, parse_interaction

    def record(**values):
        ex = tf.train.Example()
        for k, v in values.items():
            if isinstance(v, bytes):
                ex.features.feature[k].bytes_list.value.append(v)
            else:
                ex.features.feature[k].int64_list.value.append(v)
        return ex.SerializeToString()

    good = dict(user_id=1, item_id=2, timestamp=3, click=1)
    assert parse_interaction(record(**good)) == (good, None)
    assert parse_interaction(record(**{**good, "user_id": b"abc"})) == (None, "user_id not an integer")
    assert parse_interaction(record(item_id=2, timestamp=3, click=1)) == (None, "user_id missing")
    assert parse_interaction(record(**{**good, "item_id": 0})) == (None, "item_id out of range")
    assert parse_interaction(record(**{**good, "click": 2})) == (None, "click out of range")
    assert [history_bucket(n) for n in (0, 1, 4, 5, 19, 20, 50, 80)] == \
        ["00", "01-04", "01-04", "05-19", "05-19", "20-49", "50+", "50+"]


def test_gpu_extra_dockerfiles_and_docs_exist():
    setup = open(os.path.join(REPO, "setup.py")).read()
    assert '"gpu": ["tensorflow[and-cuda]' in setup
    gpu = open(os.path.join(REPO, "Dockerfile.gpu")).read()
    assert "tensorflow[and-cuda]" in gpu and "TF_USE_LEGACY_KERAS=1" in gpu
    cpu = open(os.path.join(REPO, "Dockerfile")).read()
    assert "requirements.lock" in cpu and "TF_USE_LEGACY_KERAS=1" in cpu
    for image in (cpu, gpu):  # the package installed (not editable), its schemas where the Kubeflow spec says
        assert "uv pip install --system --no-deps /tmp/mtin-src" in image and "IMAGE_SCHEMAS_DIR" in image
    assert "GPU" in open(os.path.join(REPO, "docs", "PIPELINE.md")).read()


def test_pipeline_cli_registers_its_subcommands():
    from mtin_tf.cli import build_parser

    parser = build_parser(load="pipeline")
    args = parser.parse_args(["pipeline", "run", "--data", "d", "--beam-arg=--direct_num_workers=2",
                              "--set", "epochs=1"])
    assert args.data == "d" and callable(args.func)
    from mtin_tf.pipeline.cli import pipeline_config

    config = pipeline_config(args)
    assert config.beam_pipeline_args == ("--direct_num_workers=2",) and config.mtin_config == {"epochs": 1}
    from mtin_tf.pipeline.runners.local import beam_args

    assert beam_args([], 2)[:2] == ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]
    assert beam_args([]) == []
