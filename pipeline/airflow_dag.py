"""The Airflow DAG file of the MTIN pipeline (AirflowDagRunner); Airflow's DagBag loads ``mtin_dag`` from here.

Put this module (or the two-line file ``mtin pipeline airflow-dag`` writes) in Airflow's dags folder. Settings come
from the JSON file named by $MTIN_AIRFLOW_SETTINGS (see :mod:`mtin_tf.pipeline.runners.airflow`); without it the run
directory is ~/mtin-pipeline. Importing mtin_tf (first, before TensorFlow) sets TF_USE_LEGACY_KERAS=1.
"""
from mtin_tf.pipeline.runners.airflow import create_dag, load_settings

mtin_dag = create_dag(**load_settings())
