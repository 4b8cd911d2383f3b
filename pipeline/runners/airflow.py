"""Airflow: the pipeline as an Airflow DAG built with TFX's AirflowDagRunner (Airflow 2.x).

Settings (JSON): ``run_dir``, whose ``inputs/`` was staged by ``mtin pipeline airflow-dag --data DIR``
(:func:`mtin_tf.pipeline.inputs.stage_inputs`), and ``config``, the run settings
(:meth:`mtin_tf.pipeline.config.PipelineConfig.to_dict`). The DAG file Airflow loads is
:mod:`mtin_tf.pipeline.airflow_dag`; ``mtin pipeline airflow-dag`` writes a two-line DAG file into the dags folder
that points it at the settings. Airflow workers need the mtin-tf package
(the DAG file imports mtin_tf before TensorFlow, which sets ``TF_USE_LEGACY_KERAS=1``) and
``AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT`` of a few minutes (importing TensorFlow alone exceeds the 30 s default).
"""
from __future__ import annotations

import datetime
import json
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mtin_tf.pipeline.config import PipelineConfig

DAG_ID = "mtin"
SETTINGS_ENV = "MTIN_AIRFLOW_SETTINGS"
DEFAULT_RUN_DIR = os.path.join(os.path.expanduser("~"), "mtin-pipeline")


def create_dag(run_dir: str = DEFAULT_RUN_DIR, dag_id: str = DAG_ID, schedule_interval=None,
               config: PipelineConfig | dict | None = None):
    """An Airflow DAG of the MTIN pipeline with its artifacts, MLMD and pushed models under ``run_dir``; ``config``:
    the run settings, a PipelineConfig or its :meth:`~mtin_tf.pipeline.config.PipelineConfig.to_dict` (default:
    PipelineConfig())."""
    from tfx.orchestration.airflow.airflow_dag_runner import AirflowDagRunner, AirflowPipelineConfig

    from mtin_tf.pipeline.config import PipelineConfig
    from mtin_tf.pipeline.pipeline import create_pipeline
    from mtin_tf.pipeline.runners.local import RunDirs

    if not isinstance(config, PipelineConfig):
        config = PipelineConfig.from_dict(config or {})
    dirs = RunDirs.at(run_dir)
    pipe = create_pipeline(config, pipeline_name=dag_id, pipeline_root=dirs.root, inputs_dir=dirs.inputs,
                           serving_model_dir=dirs.serving, metadata_path=dirs.metadata)
    dag_config = {"schedule_interval": schedule_interval, "start_date": datetime.datetime(2024, 1, 1), "catchup": False}
    return AirflowDagRunner(AirflowPipelineConfig(dag_config)).run(pipe)


def load_settings(path: str | None = None) -> dict:
    """create_dag keywords (``run_dir``, ``config``) from the JSON file at ``path`` (default: $MTIN_AIRFLOW_SETTINGS;
    none: defaults)."""
    path = path or os.environ.get(SETTINGS_ENV)
    if not path:
        return {}
    with open(path) as f:
        return json.load(f)


def write_dag_file(dags_folder: str, settings: dict, name: str = "mtin_pipeline_dag.py") -> str:
    """Write ``settings`` (JSON beside the DAG file) and a DAG file that loads :mod:`mtin_tf.pipeline.airflow_dag`."""
    os.makedirs(dags_folder, exist_ok=True)
    settings_path = os.path.join(os.path.abspath(dags_folder), name.replace(".py", ".json"))
    with open(settings_path, "w") as f:
        json.dump(settings, f, indent=2)
    dag_path = os.path.join(dags_folder, name)
    with open(dag_path, "w") as f:
        f.write('"""Airflow DAG of the MTIN TFX pipeline (written by `mtin pipeline airflow-dag`)."""\n'
                "import os\n\n"
                f"os.environ.setdefault({SETTINGS_ENV!r}, {settings_path!r})\n"
                "from mtin_tf.pipeline.airflow_dag import mtin_dag  "
                "# noqa: E402,F401  (Airflow collects DAG objects)\n")
    return dag_path
