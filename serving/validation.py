"""Check a PredictRequest against the signature it names, before anything runs.

TF Serving refuses a request whose inputs do not match the SignatureDef; this module does the same against the loaded
signature's ``structured_input_signature`` ({input name: TensorSpec}) and says precisely what is wrong: which input,
the expected and the received dtype or shape. Every failure is a ``ServingError`` with ``INVALID_ARGUMENT``.

Limits are checked from the TensorProto's header before any array is made from it: at most ``max_rows`` rows
(dimension 0) per request, and exactly as many values as the declared shape holds (TensorFlow would otherwise fill
a declared [1 000 000] from one value, gigabytes from a message of a few hundred bytes).

Shapes are written as lists with -1 for an unknown dimension (as in a SignatureDef), e.g. ``[-1, 50]``.
"""
from __future__ import annotations

from typing import Iterable, Mapping

import grpc
import numpy as np

from mtin_tf.serving import MAX_ROWS
from mtin_tf.serving.errors import ServingError


def _invalid(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _shape_text(dims) -> str:
    return "[" + ", ".join(str(-1 if d is None else int(d)) for d in dims) + "]"


def input_specs(signature) -> dict:
    """{input name: tf.TensorSpec} of a loaded signature (a concrete function of ``loaded.signatures``)."""
    args, kwargs = signature.structured_input_signature
    if args:
        raise TypeError("serving signatures take keyword inputs only")
    return dict(kwargs)


def payload_values(proto) -> int:
    """How many values a TensorProto carries: its ``tensor_content`` bytes over the dtype's size, or the entries of
    its typed value fields (``int64_val``, ``string_val``, ...)."""
    import tensorflow as tf

    if proto.tensor_content:
        return len(proto.tensor_content) // max(tf.dtypes.as_dtype(proto.dtype).size, 1)
    return sum(len(getattr(proto, field.name)) for field in proto.DESCRIPTOR.fields
               if field.name.endswith("_val") and field.label == field.LABEL_REPEATED)


def check_inputs(inputs: Mapping, specs: Mapping, signature_name: str,
                 max_rows: int = MAX_ROWS) -> dict[str, np.ndarray]:
    """Validate request tensors and convert them to arrays.

    Args:
      inputs: {name: TensorProto} of ``PredictRequest.inputs``.
      specs: {name: tf.TensorSpec} of the signature (:func:`input_specs`).
      signature_name: for messages.
      max_rows: the most rows (dimension 0) an input may declare.
    Returns {name: np.ndarray} with exactly the signature's inputs, every one of the spec's dtype and a shape
    compatible with the spec's, all sharing one non-zero batch size (dimension 0) of at most ``max_rows``, each
    built from exactly the values its shape declares.
    Raises ServingError(INVALID_ARGUMENT) naming the first offending input.
    """
    import tensorflow as tf

    expected = ", ".join(f"{n} {specs[n].dtype.name} {_shape_text(specs[n].shape)}" for n in sorted(specs))
    unknown = sorted(set(inputs) - set(specs))
    if unknown:
        raise _invalid(f"input {unknown[0]!r} is not an input of signature {signature_name!r}; "
                       f"its inputs are: {expected}")
    missing = sorted(set(specs) - set(inputs))
    if missing:
        spec = specs[missing[0]]
        raise _invalid(f"missing input {missing[0]!r} of signature {signature_name!r} "
                       f"(expected {spec.dtype.name} {_shape_text(spec.shape)}); its inputs are: {expected}")
    arrays = {}
    for name in sorted(specs):
        spec, proto = specs[name], inputs[name]
        try:
            dtype = tf.dtypes.as_dtype(proto.dtype)
        except TypeError:
            dtype = None
        if dtype != spec.dtype:
            got = dtype.name if dtype is not None else f"unknown dtype enum {proto.dtype}"
            raise _invalid(f"input {name!r} of signature {signature_name!r}: expected dtype {spec.dtype.name}, "
                           f"got {got}")
        dims = [d.size for d in proto.tensor_shape.dim]
        want = spec.shape.as_list()
        if proto.tensor_shape.unknown_rank or len(dims) != len(want) or any(
                w is not None and w != d for w, d in zip(want, dims)):
            got = "unknown rank" if proto.tensor_shape.unknown_rank else f"{_shape_text(dims)} (rank {len(dims)})"
            raise _invalid(f"input {name!r} of signature {signature_name!r}: expected shape {_shape_text(want)} "
                           f"(rank {len(want)}), got {got}")
        if dims and dims[0] > max_rows:
            raise _invalid(f"input {name!r} of signature {signature_name!r} has {dims[0]} rows; this server takes at "
                           f"most {max_rows} per request (mtin serve --max-rows): split the request")
        declared, carried = int(np.prod(dims, dtype=np.int64)), payload_values(proto)
        if carried != declared:
            raise _invalid(f"input {name!r} of signature {signature_name!r} declares shape {_shape_text(dims)} "
                           f"({declared} values) but carries {carried}")
        try:
            arrays[name] = tf.make_ndarray(proto)
        except (ValueError, TypeError) as exc:
            raise _invalid(f"input {name!r} of signature {signature_name!r}: its values do not fill shape "
                           f"{_shape_text(dims)}: {exc}") from exc
    check_batch(arrays)
    return arrays


def check_batch(arrays: Mapping[str, np.ndarray]) -> int:
    """All inputs share dimension 0 (the batch: one row per candidate, or per user for score_candidates), it is not
    empty, and no input is empty in another dimension (candidate_ids [U, 0]); returns the batch size."""
    sizes = {name: a.shape[0] for name, a in arrays.items()}
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"{n} has {s}" for n, s in sorted(sizes.items()))
        raise _invalid(f"inputs disagree on the batch size (dimension 0): {listed}")
    size = next(iter(sizes.values()), 0)
    if size == 0:
        raise _invalid("empty batch: no candidates to score (every input has 0 rows)")
    for name, a in sorted(arrays.items()):
        if a.size == 0:
            raise _invalid(f"input {name!r} is empty (shape {list(a.shape)}): no candidates to score")
    return size


def check_output_filter(output_filter: Iterable[str], outputs: Iterable[str], signature_name: str) -> list[str]:
    """The outputs to return: ``output_filter`` if given (each must be an output of the signature), else all."""
    outputs = sorted(outputs)
    wanted = list(output_filter) or outputs
    for name in wanted:
        if name not in outputs:
            raise _invalid(f"output_filter names {name!r}, which is not an output of signature {signature_name!r}; "
                           f"its outputs are: {outputs}")
    return wanted
