"""The names each of the library's vocabularies accepts, importable without torch.

The registries that map these names to implementations (``BACKBONES``,
``BALANCINGS``, ``PRECISIONS``, ``SELECTIONS``, ``STUDY_VARIANTS``, ...)
live beside their classes and need torch; the ``rmtl`` command line lists
and checks the names before it loads any of them, so that ``rmtl --help``
answers at once. tests/test_cli.py checks that each tuple here holds the
keys of its registry, in the same order.
"""

from __future__ import annotations

#: Keys of :data:`sklearn_rmtl.backbones.BACKBONES`.
BACKBONE_NAMES = (
    "singletask",
    "sharedbottom",
    "esmm",
    "mmoe",
    "ple",
    "omoe",
    "aitm",
    "pepnet",
    "stem",
)
#: Keys of :data:`sklearn_rmtl.balancing.BALANCINGS`.
BALANCING_NAMES = ("fixed", "uncertainty", "gradnorm", "dwa", "pcgrad")
#: Keys of ``sklearn_rmtl._precision.PRECISIONS``.
PRECISION_NAMES = ("float32", "bfloat16", "float16")
#: ``sklearn_rmtl._training.SELECTIONS``: what early stopping can compare.
SELECTION_NAMES = ("loss", "auc", "gauc")
#: Keys of ``sklearn_rmtl._experiments.STUDY_VARIANTS``.
STUDY_VARIANT_NAMES = (
    "backbone",
    "rmtl",
    "constant",
    "label_mean",
    "rmtl_fixed",
    "rmtl_shuffled",
    "rmtl_flipped",
    "outcome",
    "outcome_label_mean",
    "outcome_shuffled",
)
#: The variants ``rmtl study`` runs unless told otherwise.
STUDY_DEFAULT = ("backbone", "rmtl", "constant", "label_mean")
#: Keys of ``sklearn_rmtl._experiments.EVALUATE_ON``.
EVALUATE_ON_NAMES = ("test", "valid")
#: The datasets of the experiment commands: the bundled samples and synthetic
#: sessions.
DATASET_NAMES = ("retailrocket", "taobao", "kuairand", "synthetic")

#: File suffixes of each table kind the command line reads and writes.
CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.zip", ".csv.xz")
TSV_SUFFIXES = (".tsv", ".tsv.gz")
PARQUET_SUFFIXES = (".parquet", ".pq")
SUFFIXES = (*CSV_SUFFIXES, *TSV_SUFFIXES, *PARQUET_SUFFIXES)

#: Rows a :class:`~sklearn_rmtl.parquet.ParquetSource` reads at a time by
#: default.
BLOCK_ROWS = 65536
