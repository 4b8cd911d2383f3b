"""Package data, installed as ``mtin_tf.schemas`` (setup.py's package_dir): the TFX schemas the pipeline's
ImportSchemaGen components read, ``interactions/schema.pbtxt`` and ``examples/schema.pbtxt``. Generated from
mtin_tf.features by ``python -m mtin_tf.data.schema``; find them with :func:`mtin_tf.data.schema.schemas_dir`."""
