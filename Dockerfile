# mtin-tf image for the Kubeflow pipeline (every component runs in it) and for batch jobs.
#   docker build -t mtin-tf:0.1.0 .
#   mtin pipeline compile-kubeflow --output mtin_kfp.json --image mtin-tf:0.1.0 ...
# CPU image; Dockerfile.gpu is the GPU variant for the Trainer's nodes.
FROM python:3.10-slim-bookworm

# TF 2.16's tf.keras is Keras 3; TFT, TFMA and TFRS need Keras 2 (tf_keras). Must be set before TensorFlow loads.
# Importing mtin_tf sets it (mtin_tf/__init__.py), but the components' container entrypoint (TFX's executor runner)
# and Beam's workers import TensorFlow before they load mtin_tf's run_fn / preprocessing_fn by dotted path.
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

# The code, installed as a package (not editable) into site-packages: mtin_tf (model, training, data),
# mtin_tf.pipeline (TFX components, run_fn/preprocessing_fn by dotted path), mtin_tf.serving, and the schemas as
# package data (ImportSchemaGen reads them at kubeflow.IMAGE_SCHEMAS_DIR, which the last command checks). The sources
# are removed: nothing in WORKDIR may shadow the installed package.
COPY setup.py README.md /tmp/mtin-src/
COPY mtin_tf /tmp/mtin-src/mtin_tf
COPY pipeline /tmp/mtin-src/pipeline
COPY serving /tmp/mtin-src/serving
COPY schemas /tmp/mtin-src/schemas
RUN uv pip install --system --no-deps /tmp/mtin-src && rm -rf /tmp/mtin-src \
    && python -c "from mtin_tf.data.schema import schemas_dir; from mtin_tf.pipeline.runners.kubeflow import IMAGE_SCHEMAS_DIR as want; assert schemas_dir() == want, (schemas_dir(), want)"

# KubeflowV2DagRunner's components start TFX's container entrypoint with this image's python.
ENTRYPOINT []
CMD ["mtin", "--help"]
