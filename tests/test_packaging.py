"""`pip install .` (not editable) into a fresh venv outside the repository, then the package's commands from a working
directory outside it: mtin_tf.pipeline and mtin_tf.serving import from the venv's site-packages, the generic names
`pipeline` / `serving` do not exist, the schemas are package data, and `mtin pipeline run` reads them there.

Fast and offline: the venv has no pip of its own and sees the heavy dependencies (TensorFlow, TFX, ...) through a .pth
file naming the site-packages directories of the interpreter running the tests (a plain path line, so their own .pth
files, e.g. an editable install's finder of this repository, are not run); the project installs with --no-deps
--no-build-isolation from a copy of its sources (so no stale build/ of the checkout goes into the wheel).
"""
import json
import os
import shutil
import subprocess
import sys
import sysconfig

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = ("setup.py", "README.md", "mtin_tf", "pipeline", "serving", "schemas")  # what the Dockerfile copies


def _dependency_dirs() -> list:
    """The running interpreter's site-packages (sysconfig), and any other site-packages on its sys.path (a venv layered
    on another through a .pth file)."""
    dirs = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    dirs += [p for p in sys.path if os.path.basename(p) in ("site-packages", "dist-packages")]
    return [d for i, d in enumerate(dirs) if os.path.isdir(d) and d not in dirs[:i]]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """{"python", "bin", "site", "cwd", "env"} of a fresh venv with mtin-tf installed by `pip install .`."""
    root = tmp_path_factory.mktemp("packaging")
    src, venv, cwd = root / "src", root / "venv", root / "work"
    src.mkdir()
    cwd.mkdir()
    for name in SOURCES:
        path = os.path.join(REPO, name)
        if os.path.isdir(path):
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy(path, src / name)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = str(venv / "bin" / "python")
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    with open(os.path.join(site, "_mtin_test_dependencies.pth"), "w") as f:
        f.write("\n".join(_dependency_dirs()) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TF_USE_LEGACY_KERAS", "PYTHONHOME")}
    # setuptools' distutils shim is a .pth file in the dependencies' site-packages, which is not run here.
    env.update(PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1", TF_CPP_MIN_LOG_LEVEL="2",
               SETUPTOOLS_USE_DISTUTILS="stdlib")
    pip = subprocess.run([python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", str(src)],
                         cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    return {"python": python, "bin": str(venv / "bin"), "site": site, "cwd": str(cwd), "env": env}


def test_the_checkout_binds_the_subpackages_to_itself():
    # Run from the repository (make test): mtin_tf.pipeline / .serving / .schemas are this checkout's folders, as
    # setup.py's package_dir maps them; mtin_tf.PACKAGE_DIR (the checkout's own finder) is the same map.
    import ast

    import mtin_tf
    import mtin_tf.pipeline.pipeline
    import mtin_tf.schemas
    import mtin_tf.serving.client

    tree = ast.parse(open(os.path.join(REPO, "setup.py")).read())
    assigned = {t.id: node.value for node in tree.body if isinstance(node, ast.Assign) for t in node.targets}
    assert ast.literal_eval(assigned["PACKAGE_DIR"]) == mtin_tf.PACKAGE_DIR
    for module, folder in ((mtin_tf, "mtin_tf"), (mtin_tf.pipeline.pipeline, "pipeline"),
                           (mtin_tf.serving.client, "serving"), (mtin_tf.schemas, "schemas")):
        assert os.path.dirname(os.path.abspath(module.__file__)) == os.path.join(REPO, folder)
    assert mtin_tf.pipeline.pipeline.SCHEMAS_DIR == os.path.join(REPO, "schemas")


def _run(installed, *argv, timeout=120):
    run = subprocess.run(list(argv), cwd=installed["cwd"], env=installed["env"], capture_output=True, text=True,
                         timeout=timeout)
    assert run.returncode == 0, f"{argv}: exit {run.returncode}\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    return run.stdout


PROBE = """
import importlib.util, json, os
import mtin_tf
legacy = os.environ.get("TF_USE_LEGACY_KERAS")
import mtin_tf.pipeline, mtin_tf.serving, mtin_tf.serving.local
from mtin_tf.data.schema import schemas_dir
from mtin_tf.pipeline import pipeline
from mtin_tf.pipeline.runners.kubeflow import IMAGE_SCHEMAS_DIR
print(json.dumps({
    "files": [m.__file__ for m in (mtin_tf, mtin_tf.pipeline, mtin_tf.serving, pipeline)],
    "generic": {name: importlib.util.find_spec(name) is not None for name in ("pipeline", "serving", "schemas")},
    "schemas_dir": schemas_dir(), "pipeline_schemas": pipeline.SCHEMAS_DIR, "image_schemas": IMAGE_SCHEMAS_DIR,
    "server_root": mtin_tf.serving.local._ROOT, "legacy_keras": legacy}))
"""


def test_the_installed_package_imports_from_site_packages_under_mtin_tf_only(installed):
    got = json.loads(_run(installed, installed["python"], "-c", PROBE))
    site = os.path.realpath(installed["site"])
    for path in got["files"]:
        assert os.path.realpath(path).startswith(site + os.sep), path  # not the repository
    assert got["generic"] == {"pipeline": False, "serving": False, "schemas": False}
    schemas = got["schemas_dir"]
    assert os.path.realpath(schemas) == os.path.join(site, "mtin_tf", "schemas") == got["pipeline_schemas"]
    for rel in ("interactions/schema.pbtxt", "examples/schema.pbtxt"):
        with open(os.path.join(schemas, rel)) as mine, open(os.path.join(REPO, "schemas", rel)) as theirs:
            assert mine.read() == theirs.read()
    # The Kubeflow image installs the package the same way into the python image's site-packages.
    assert got["image_schemas"].endswith("/site-packages/mtin_tf/schemas")
    for data in ("models.config", "docker-compose.yml", "k8s/deployment.yaml", "k8s/service.yaml"):
        assert os.path.isfile(os.path.join(site, "mtin_tf", "serving", data)), data
    assert os.path.realpath(got["server_root"]) == site  # `mtin serve`'s child imports the same mtin_tf
    assert got["legacy_keras"] == "1"  # importing mtin_tf set it, before TensorFlow


def test_the_commands_run_outside_the_repository(installed):
    mtin = os.path.join(installed["bin"], "mtin")
    out = _run(installed, mtin, "--help")
    for name in ("data", "train", "pipeline", "demo", "serve", "predict", "recommend"):
        assert name in out
    assert "--model-base-path" in _run(installed, mtin, "serve", "--help")

    # The TFX pipeline up to ExampleValidator on a tiny generated dataset: ImportSchemaGen reads the package's schema.
    _run(installed, mtin, "data", "generate", "--out", "data", "--num-users", "24", "--num-items", "80",
         "--num-clusters", "6", "--feature-dim", "4", "--interactions-per-user", "20", "--seed", "1")
    out = _run(installed, mtin, "pipeline", "run", "--data", "data", "--run-dir", "run",
               "--stop-after", "InteractionsValidator", timeout=240)
    assert "stopped after InteractionsValidator" in out
    for node in ("InteractionsGen", "InteractionsSchema", "InteractionsStats", "InteractionsValidator"):
        assert node in out
    schema_dirs = []
    for dirpath, _, files in os.walk(os.path.join(installed["cwd"], "run")):
        if "schema.pbtxt" in files and f"{os.sep}InteractionsSchema{os.sep}" in dirpath + os.sep:
            schema_dirs.append(dirpath)
    assert schema_dirs, "ImportSchemaGen wrote no schema"
    assert not os.path.exists(os.path.join(installed["cwd"], "schemas"))
