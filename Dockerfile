# mtin-tf image for the Kubeflow pipeline (every component runs in it) and for batch jobs.
#   docker build -t mtin-tf:0.1.0 .
#   mtin pipeline compile-kubeflow --output mtin_kfp.json --image mtin-tf:0.1.0 ...
# CPU image; Dockerfile.gpu is the GPU variant for the Trainer's nodes.
FROM python:3.10-slim-bookworm

# TF 2.16's tf.keras is Keras 3; TFT, TFMA and TFRS need Keras 2 (tf_keras). Must be set before TensorFlow loads,
# in every process: components, Beam workers, Airflow workers.
ENV TF_USE_LEGACY_KERAS=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

RUN apt-get update && apt-get install -y --no-install-recommends build-essential git \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# Dependencies first (cached layer): the fully pinned lock the project is tested with.
COPY requirements.lock ./
RUN pip install --upgrade "pip>=23" "uv>=0.4" \
    && uv pip install --system -r requirements.lock

# The code: mtin_tf (model, training, data), pipeline (TFX components, run_fn/preprocessing_fn by dotted path),
# serving, and schemas/ (ImportSchemaGen reads /app/schemas).
COPY setup.py README.md ./
COPY mtin_tf ./mtin_tf
COPY pipeline ./pipeline
COPY serving ./serving
COPY schemas ./schemas
RUN uv pip install --system --no-deps -e . && python -c "import mtin_tf, pipeline.pipeline"

# KubeflowV2DagRunner's components start TFX's container entrypoint with this image's python.
ENTRYPOINT []
CMD ["mtin", "--help"]
