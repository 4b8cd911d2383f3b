"""mtin-tf: MTIN (Jiang et al., ACM MM 2020) as reusable tf_keras layers and a trainable, saveable model."""
import os as _os

# TF 2.16's tf.keras is Keras 3, but TFT, TFMA and TFRS need Keras 2: select tf_keras before TensorFlow is imported.
_os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

__version__ = "0.1.0"
