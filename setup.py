"""mtin-tf: MTIN (multi-scale time-aware user interest network) on TensorFlow, TFX and TF Serving."""
from setuptools import find_packages, setup

# Ranges that TFX 1.16 allows; the exact versions live in requirements.lock.
INSTALL_REQUIRES = [
    "tensorflow>=2.16.1,<2.17",
    "tf-keras>=2.16,<2.17",
    "tfx>=1.16,<1.17",
    "tensorflow-transform>=1.16,<1.17",
    "tensorflow-model-analysis>=0.47,<0.48",
    "tensorflow-data-validation>=1.16,<1.17",
    "tfx-bsl>=1.16,<1.17",
    "ml-metadata>=1.16,<1.17",
    "tensorflow-recommenders>=0.7.3,<0.8",
    "tensorflow-serving-api>=2.16,<2.17",
    "apache-beam[gcp]>=2.59,<2.60",
    "grpcio>=1.48",
    "grpcio-health-checking>=1.48",  # grpc.health.v1 of `mtin serve` (the protobuf < 4 range pins it to 1.48)
    "prometheus-client>=0.17",  # `mtin serve --metrics-port`
    "protobuf>=3.20.3,<4",
    "numpy>=1.22,<2",
    "pandas>=1.5,<2",
    "pyarrow>=10,<11",
    "tqdm>=4.60",
    # TFX installs a pipeline module file as a wheel with pip at run time: pip must be inside the environment.
    "pip>=23",
    "setuptools>=65,<75",  # builds that wheel; newer setuptools drop pkg_resources, which parts of the stack import
    "matplotlib>=3.7,<4",
    "scikit-learn>=1.3,<1.6",  # `mtin experiment`'s adjusted Rand index (sklearn.metrics.adjusted_rand_score)
]

EXTRAS_REQUIRE = {
    # Same TF version with the CUDA libraries; not in the lock (no GPU where the lock is resolved and tested).
    "gpu": ["tensorflow[and-cuda]>=2.16.1,<2.17"],
    "orchestration": [
        "kfp>=2.5,<2.6",
        "kfp-pipeline-spec>=0.2.2,<0.3",
        "apache-airflow>=2.10,<3",
    ],
    "dev": [
        "hypothesis>=6.100,<7",  # property-based fuzzing of the data readers (tests/test_data_fuzz.py)
        "pytest>=8,<9",
        "pytest-timeout>=2.3",
        "pytest-xdist>=3.5,<4",  # make test runs the suite on every core (pytest.ini: -n auto)
        "ruff>=0.15,<0.18",  # make test lints first (ruff.toml)
    ],
}

PACKAGE_DIR = {"mtin_tf.pipeline": "pipeline", "mtin_tf.serving": "serving", "mtin_tf.schemas": "schemas"}
PACKAGES = find_packages(include=["mtin_tf", "mtin_tf.*"]) + [
    f"{name}.{sub}" if sub else name
    for name, folder in PACKAGE_DIR.items() for sub in [""] + find_packages(where=folder)]

setup(
    name="mtin-tf",
    version="0.1.0",
    description="MTIN (Jiang et al., ACM MM 2020) as tf_keras layers, a TFX pipeline and TF Serving deployment",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.9,<3.11",
    # pipeline/, serving/ and schemas/ stay at the repository root but install as mtin_tf.pipeline, mtin_tf.serving
    # and mtin_tf.schemas (generic top-level names like `pipeline` collide with other distributions). Editable
    # installs must honour package_dir: setuptools' lenient mode (scripts/setup_env.sh), not compat.
    packages=PACKAGES,
    package_dir=PACKAGE_DIR,
    package_data={"mtin_tf.serving": ["*.config", "*.txt", "*.yml", "k8s/*.yaml"],
                  "mtin_tf.schemas": ["*/schema.pbtxt"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={"console_scripts": ["mtin=mtin_tf.cli:main"]},
)
