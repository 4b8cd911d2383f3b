"""Kubeflow: compile the pipeline to a KFP v2 pipeline spec (JSON) with KubeflowV2DagRunner, offline.

Every component runs in ``image`` (built from this repository's Dockerfile, or Dockerfile.gpu for the Trainer's GPU
nodes); paths (pipeline root, inputs, serving directory) are as the cluster sees them, e.g. ``gs://`` URIs or a shared
volume. The Trainer requests the accelerators of the config's ``gpu_request`` (platform config → the KFP task's
resource spec), if any. Upload the spec with the KFP client or the Kubeflow UI.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from mtin_tf.pipeline.config import PipelineConfig

DEFAULT_IMAGE = "mtin-tf:0.1.0"
# The schema files of the package installed in the image (the python image's site-packages; `pip install .`, not
# editable). The component containers read them; the compiler on this machine only writes the path into the spec.
# The Dockerfiles' last step checks that mtin_tf.data.schema.schemas_dir() is this path in the image.
IMAGE_SCHEMAS_DIR = "/usr/local/lib/python3.10/site-packages/mtin_tf/schemas"


def compile_kubeflow(output: str, config: Optional[PipelineConfig] = None, *, image: str = DEFAULT_IMAGE,
                     pipeline_root: str, inputs_dir: str, serving_model_dir: str,
                     schemas_dir: str = IMAGE_SCHEMAS_DIR) -> str:
    """Write the KFP v2 pipeline spec of the MTIN pipeline with the run settings ``config`` (default:
    PipelineConfig(), no GPUs) to ``output``; returns its path."""
    from tfx import v1 as tfx

    from mtin_tf.pipeline.config import PipelineConfig
    from mtin_tf.pipeline.pipeline import create_pipeline

    pipe = create_pipeline(config or PipelineConfig(), pipeline_root=pipeline_root, inputs_dir=inputs_dir,
                           serving_model_dir=serving_model_dir, metadata_path=None, schemas_dir=schemas_dir)
    output = os.path.abspath(output)
    os.makedirs(os.path.dirname(output), exist_ok=True)
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=image),
        output_dir=os.path.dirname(output), output_filename=os.path.basename(output))
    runner.run(pipe, write_out=True)
    return output


def spec_task_names(path: str) -> list:
    """Task names of a compiled pipeline (the PipelineJob JSON TFX writes), read back with kfp's loader."""
    import json

    from kfp.components import load_component_from_text

    with open(path) as f:
        job = json.load(f)
    component = load_component_from_text(json.dumps(job.get("pipelineSpec", job)))
    return sorted(component.pipeline_spec.root.dag.tasks)
