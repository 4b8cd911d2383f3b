"""scripts/setup_env.sh (behind `make setup`) fails with one clear message, not a pip traceback."""
import os
import pathlib
import shutil
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _copy_project(tmp_path, lock_text=None):
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "setup_env.sh", tmp_path / "scripts" / "setup_env.sh")
    shutil.copy(ROOT / "setup.py", tmp_path / "setup.py")
    (tmp_path / "requirements.lock").write_text(lock_text or (ROOT / "requirements.lock").read_text())
    return tmp_path / "scripts" / "setup_env.sh"


def _run(script, env):
    return subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=300, env=env)


def test_missing_python310_is_one_clear_message(tmp_path):
    script = _copy_project(tmp_path)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHON310": str(tmp_path / "no-such-python")}
    out = _run(script, env)
    assert out.returncode == 1
    assert "Python 3.10 was not found" in out.stderr and "TFX 1.16" in out.stderr
    assert "Traceback" not in out.stderr


def test_broken_lock_is_one_clear_message(tmp_path):
    script = _copy_project(tmp_path, lock_text="mtin-no-such-package-4f2a==0.0.1\n")
    out = _run(script, {**os.environ, "HOME": os.environ.get("HOME", str(tmp_path))})
    assert out.returncode == 1
    assert "installing requirements.lock failed" in out.stderr and "make lock" in out.stderr
    assert "Traceback" not in out.stderr


def test_unchanged_lock_is_a_no_op():
    # The project's own environment is stamped with the lock's hash: a second set-up returns at once.
    out = subprocess.run(["bash", str(ROOT / "scripts" / "setup_env.sh")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout == ""
