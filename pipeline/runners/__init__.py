"""Runners of the one pipeline definition: local (embedded default), Kubeflow (compile) and Airflow (DAG)."""
