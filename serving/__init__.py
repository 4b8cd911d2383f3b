"""Serving MTIN over TF Serving's gRPC API.

- Deployment for the real ``tensorflow/serving`` image: ``models.config``, ``docker-compose.yml``
  and ``k8s/`` (Deployment + Service), all agreeing with the constants below.
- :mod:`mtin_tf.serving.client`: ``MTINClient`` (PredictionService Predict / GetModelMetadata over gRPC).
- A local server speaking the same API over the same versioned SavedModel directory (the embedded default and what the
  tests run): :mod:`mtin_tf.serving.model_store` (versions, polling, hot swap), :mod:`mtin_tf.serving.validation`
  (request checks against the signature), :mod:`mtin_tf.serving.server` (PredictionService + ModelService
  servicers, graceful shutdown), :mod:`mtin_tf.serving.cli` (``mtin serve``, ``mtin predict``, ``mtin recommend``).

This package needs only the exported SavedModel and the tensorflow-serving-api protos; it never rebuilds the model.
"""

DEFAULT_MODEL_NAME = "mtin"
GRPC_PORT = 8500  # TF Serving's default gRPC port
REST_PORT = 8501  # TF Serving's default REST port
CONTAINER_MODEL_BASE_PATH = "/models/mtin"  # where the compose file and Kubernetes mount the pushed directory
TF_SERVING_IMAGE = "tensorflow/serving:2.16.1"
METADATA_FIELD = "signature_def"  # the one GetModelMetadata field TF Serving supports
MAX_ROWS = 1024  # rows (dimension 0) per Predict request: TF Serving's max_batch_size in its batching examples
MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # gRPC message limit of the local server and the client (default is 4 MiB)
GRPC_OPTIONS = (("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES))
