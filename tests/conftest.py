import os

# Must precede the first TensorFlow import anywhere in the test session (TFT, TFMA and TFRS need Keras 2, i.e. tf_keras).
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
