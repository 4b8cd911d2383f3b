"""Data for MTIN: dataset readers -> one canonical raw format -> training examples with histories.

Modules (one per mechanism; import the one you need, TensorFlow and Beam load only where used):

- :mod:`~mtin_tf.data.canonical`: canonical interactions (CSV/Parquet) and item features (.npz), validation.
- :mod:`~mtin_tf.data.report`: counting and reporting bad input (JSON beside the output), strict mode.
- :mod:`~mtin_tf.data.ranges`: the value ranges of ids, timestamps, clicks, categories; exact int64 parsing of text.
- :mod:`~mtin_tf.data.delimited`: CSV/TSV read row by row as text; rows with too many fields counted, not fatal.
- :mod:`~mtin_tf.data.safe_pickle`: a restricted unpickler for KuaiShou's pickles (data types only, no code).
- :mod:`~mtin_tf.data.microvideo`, :mod:`~mtin_tf.data.kuaishou`, :mod:`~mtin_tf.data.movielens`: dataset readers.
- :mod:`~mtin_tf.data.planted`: the planted-interest generator with ground truth.
- :mod:`~mtin_tf.data.history`: the per-user example builder, in-memory path and time-based split.
- :mod:`~mtin_tf.data.beam_history`: the same builder as a Beam PTransform.
- :mod:`~mtin_tf.data.examples`: tf.Example / TFRecord I/O and dense model arrays.
- :mod:`~mtin_tf.data.schema`: the TFX schemas in ``schemas/``, generated from ``mtin_tf.features``.
- :mod:`~mtin_tf.data.cli`: ``mtin data convert | fetch-movielens | generate | build``.

See docs/DATA.md.
"""
