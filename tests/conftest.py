import os

# Must precede the first TensorFlow import anywhere in the test session (TFT, TFMA and TFRS need Keras 2, i.e. tf_keras),
# except in the Keras 3 run of the layer suite (tests/test_layers_keras.py starts it with MTIN_TEST_KERAS=3).
if os.environ.get("MTIN_TEST_KERAS") != "3":
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
