"""The Airflow DAG file of the MTIN pipeline (AirflowDagRunner); Airflow's DagBag loads ``mtin_dag`` from here.

Put this module (or the two-line file ``mtin pipeline airflow-dag`` writes) in Airflow's dags folder. Settings come
from the JSON file named by $MTIN_AIRFLOW_SETTINGS (see :mod:`pipeline.runners.airflow`); without it the run
directory is ~/mtin-pipeline. TF_USE_LEGACY_KERAS=1 is set here, before TensorFlow is first imported.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from pipeline.runners.airflow import create_dag, load_settings

mtin_dag = create_dag(**load_settings())
