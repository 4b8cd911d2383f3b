"""The README's layer-reuse snippet runs as written and builds a working tf_keras model."""
import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_layer_snippet_runs():
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    scope = {}
    exec(compile(code, str(README), "exec"), scope)  # noqa: S102 - our own README
    model = scope["model"]
    h, w, assignment = model([np.random.rand(2, 50, 64).astype("float32"), np.random.rand(2, 4, 64).astype("float32"),
                              np.ones((2, 50), bool)])
    assert h.shape == (2, 4, 64) and w.shape == (2, 4, 4) and assignment.shape == (2, 50)
    np.testing.assert_allclose(w.numpy().sum(-1), 1.0, atol=1e-5)
