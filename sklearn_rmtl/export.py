"""Serving a fitted model without this library: ONNX and torch.export.

:func:`to_onnx` writes one ONNX graph whose inputs are the raw feature
columns and whose output is the ``(n, n_tasks)`` probability matrix: the
vocabulary lookups, imputation, standardisation and the network are all
inside it, so onnxruntime (or any ONNX runtime) serves the model alone.
:func:`to_torch` writes the network as a ``torch.export`` program with the
feature encoding described as JSON beside it (:func:`describe_encoding`),
for serving from torch. Both need optional packages: ``pip install
"sklearn-rmtl[onnx]"`` (onnx, onnxruntime, onnxscript).

The inputs of the ONNX graph are one ``(n, 1)`` tensor per feature column,
named and ordered as ``feature_names_in_``; :func:`onnx_inputs` builds them
from a DataFrame. Their types:

- a categorical column whose known values are strings: ``string``; its
  ``missing_value`` in :func:`describe_encoding` means a missing value:
  ``""``, or ``"<missing>"`` (with ``_`` appended until it is no known
  value) when ``""`` is a known value. Any other string that is no known
  value is unseen, an empty string too, as in ``predict_proba``;
- one of integers: ``int64`` (no missing values: fill them, or fit on a
  float column, whose NaN means missing);
- one of booleans: ``bool``;
- one of floats (or of ints and floats): ``double``, NaN meaning missing;
- a numerical column: ``double``, NaN meaning missing (imputed as in
  ``predict_proba``); infinite values give NaN probabilities, where
  ``predict_proba`` raises;
- a hashed id column (``hash_buckets``): ``string``, the ids as text
  (integers in decimal, as :func:`onnx_inputs` writes them), ``""``
  meaning missing. The graph hashes them with ONNX Runtime's
  ``com.microsoft.MurmurHash3`` operator, so such a graph needs ONNX
  Runtime (the other operators are standard ONNX);
- a sequence column (``sequence_features``): an ``(n, max_sequence_length)``
  input, each row's last elements first, then padding: ``string`` with its
  ``missing_value`` as padding when the vocabulary it uses is text (or
  hashed), ``double`` with NaN as padding otherwise.

The graph computes in float32: for a model of ``precision="float32"`` its
probabilities equal ``predict_proba``'s to 1e-5. ``predict_proba`` of a
``"bfloat16"`` or ``"float16"`` model runs its matrix products in that
dtype, so the exported graph (and the ``torch.export`` program) differ from
it by that dtype's rounding, up to about 5e-3 for bfloat16 and 1e-3 for
float16 (:data:`PRECISION_TOLERANCE`); :func:`to_onnx` and :func:`to_torch`
warn.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.utils.validation import check_is_fitted
from torch import Tensor, nn

from sklearn_rmtl._encoding import (
    MISSING_CODE,
    UNKNOWN_CODE,
    _flat_sequences,
    hash_key,
)
from sklearn_rmtl._mtl import MTLClassifier
from sklearn_rmtl._validation import to_pandas

#: ONNX type of the input of each kind of column (see the module docstring).
_ONNX_TYPES = {"string": "STRING", "int64": "INT64", "bool": "BOOL", "double": "DOUBLE"}

#: The largest difference between an exported model's probabilities (in
#: float32) and ``predict_proba``, by the model's ``precision``: the
#: rounding of the lower-precision matrix products that ``predict_proba``
#: runs (bfloat16 keeps 8 significant bits, float16 11).
PRECISION_TOLERANCE = {"float32": 1e-5, "bfloat16": 5e-3, "float16": 1e-3}

#: The graph's output, the one name that a feature column cannot have.
_OUTPUT = "probabilities"


def _require(module: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise ImportError(
            f"Exporting needs {module}; install the extra with "
            "pip install 'sklearn-rmtl[onnx]'."
        ) from None


def _value_kind(values: list[Any]) -> str:
    """The input type of a categorical column, from its known values.

    The encoder keeps a column's values as they are when they share one
    type and as strings otherwise, so text is the fallback. A column with no
    known values (missing in every fitted row) is text too: every value is
    unseen there, and text is the one input type any value converts to.
    """
    if not values:
        return "string"
    if all(isinstance(v, bool | np.bool_) for v in values):
        return "bool"
    if all(isinstance(v, int | np.integer) for v in values):
        return "int64"
    if all(isinstance(v, int | float | np.number) for v in values):
        return "double"  # 3 and 3.0 are one value, as in predict_proba
    return "string"


def _free_string(taken: Any, base: str) -> str:
    """``base``, with ``_`` appended until it is not in ``taken``."""
    while base in taken:
        base += "_"
    return base


def _string_markers(values: list[Any]) -> tuple[str, str]:
    """The input strings of a text column that mean missing, and unseen.

    Neither is a known value. Missing is ``""`` unless ``""`` is known;
    :func:`onnx_inputs` feeds the unseen one for a present value equal to
    the missing one (an empty string is unseen in ``predict_proba``).
    """
    known = {str(v) for v in values}
    missing = "" if "" not in known else _free_string(known, "<missing>")
    return missing, _free_string(known | {missing}, "<unseen>")


def _input_columns(estimator: MTLClassifier) -> list[dict[str, Any]]:
    """Every input column in X's order, as the fitted encoder's state holds it
    (:meth:`FeatureEncoder._get_state`), with its ``role`` and input ``type``."""
    check_is_fitted(estimator)
    state = estimator.encoder_._get_state()
    for column in state["categorical"]:
        if column["buckets"]:  # hashed ids are fed as text
            column.update(role="categorical", type="string", missing_value="")
            continue
        column.update(role="categorical", type=_value_kind(column["values"]))
        if column["type"] == "string":
            column["missing_value"] = _string_markers(column["values"])[0]
    for column in state["numerical"]:
        column.update(role="numerical", type="double")
    by_name = {c["name"]: c for c in state["categorical"]}
    for column in state["sequences"]:
        # The elements are read as the shared column's values (or by the
        # sequence's own vocabulary), as text or as float64: an (n, length)
        # input needs a padding value, which int64 and bool inputs lack.
        shared = by_name.get(column["vocabulary"], column)
        buckets = shared.get("buckets", 0)
        kind = "string" if buckets else _value_kind(shared["values"])
        column.update(
            role="sequence",
            type="string" if kind == "string" else "double",
            length=estimator.encoder_.max_sequence_length,
            values=shared["values"],
            codes=shared["codes"],
            buckets=buckets,
        )
        if column["type"] == "string":
            column["missing_value"] = (
                "" if buckets else _string_markers(shared["values"])[0]
            )
    return sorted(
        state["categorical"] + state["numerical"] + state["sequences"],
        key=lambda c: c["position"],
    )


def describe_encoding(estimator: MTLClassifier) -> dict[str, Any]:
    """The fitted feature encoding as plain, JSON-serialisable data.

    What a serving system outside Python needs to turn raw columns into the
    network's inputs ``x_cat`` (int64 codes) and ``x_num`` (float32).

    Parameters
    ----------
    estimator : MTLClassifier or RMTLClassifier
        A fitted estimator.

    Returns
    -------
    description : dict
        ``columns``: every input column in order, each with ``name``,
        ``role`` ("categorical" or "numerical") and ``type`` (see the module
        docstring); a categorical column has ``values`` and ``codes`` (its
        vocabulary; a text column also ``missing_value``, the input string
        that means missing), a hashed one ``buckets`` (its code is ``2 +
        murmurhash3_32(id as UTF-8 text, seed=0, positive=True) %
        buckets``, 0 for ``missing_value``), a numerical one ``mean``,
        ``scale`` and ``missing_indicator``; a sequence column (role
        "sequence", an input of ``length`` columns: each row's last
        ``length`` elements, then ``missing_value`` or NaN as padding) has
        ``vocabulary`` (the categorical column whose encoding it shares, or
        None) and the encoding of its elements, as a categorical column's.
        Also ``missing_code``, ``unknown_code``, ``task_names`` and
        ``layout`` (the columns of ``x_cat``, a sequence's ``length`` codes
        each, and of ``x_num``).
    """
    columns: list[dict[str, Any]] = []
    keys: tuple[str, ...]
    for column in _input_columns(estimator):
        kind = column["type"]
        role = column["role"]
        if role == "numerical":
            keys = ("mean", "scale", "missing_indicator")
        elif column["buckets"]:
            keys = ("buckets", "missing_value")
        else:
            cast = {"string": str, "int64": int, "bool": bool, "double": float}[kind]
            column["values"] = [cast(v) for v in column["values"]]
            keys = ("values", "codes", *(["missing_value"] * (kind == "string")))
        if role == "sequence":
            keys = ("length", "vocabulary", *keys)
        columns.append({k: column[k] for k in ("name", "role", "type", *keys)})
    encoder = estimator.encoder_
    return {
        "columns": columns,
        "missing_code": MISSING_CODE,
        "unknown_code": UNKNOWN_CODE,
        "task_names": [str(t) for t in estimator.task_names_],
        "layout": {
            "x_cat": [str(c) for c in encoder.categorical_features_]
            + [str(c) for c in encoder.sequence_features_],
            "x_num": [str(c) for c in encoder.numerical_features_]
            + [f"missingindicator_{c}" for c in encoder.missing_indicator_features_],
        },
    }


def onnx_inputs(estimator: MTLClassifier, X: pd.DataFrame) -> dict[str, np.ndarray]:
    """The ONNX graph's inputs for the rows of ``X`` (see :func:`to_onnx`).

    Parameters
    ----------
    estimator : MTLClassifier or RMTLClassifier
        The fitted estimator that was exported.
    X : DataFrame (pandas, polars), pyarrow Table or array
        Rows with (at least) the columns of ``feature_names_in_``; for a
        model fitted without column names (an array, or a DataFrame whose
        column labels are not all strings), the fitted columns in order.

    Returns
    -------
    feed : dict of str to ndarray
        One ``(n, 1)`` array per input (``(n, length)`` for a sequence
        column), of the input's type; missing values of a string column
        become its ``missing_value`` (see :func:`describe_encoding`), of a
        number ``NaN``.
    """
    columns = _input_columns(estimator)
    X = to_pandas(X)
    by_name = isinstance(X, pd.DataFrame) and hasattr(estimator, "feature_names_in_")
    if not isinstance(X, pd.DataFrame):
        X = pd.DataFrame(np.asarray(X))
    feed = {}
    for column in columns:
        name = column["name"]
        values: pd.Series = X[name] if by_name else X.iloc[:, column["position"]]
        if column["role"] != "sequence":
            feed[name] = _as_input(values, column).reshape(-1, 1)
            continue
        length = column["length"]
        flat, counts = _flat_sequences(name, values, length)
        padding = column.get("missing_value", np.nan)
        matrix = np.full((len(values), length), padding, dtype=object)
        rows = np.repeat(np.arange(len(values)), counts)
        slots = np.arange(len(flat)) - np.repeat(np.cumsum(counts) - counts, counts)
        matrix[rows, slots] = _as_input(flat, column)
        feed[name] = matrix if column["type"] == "string" else matrix.astype(float)
    return feed


def _as_input(values: pd.Series, column: dict[str, Any]) -> np.ndarray:
    """A column's values as the 1-D array its ONNX input takes."""
    name, kind = column["name"], column["type"]
    if column.get("buckets"):
        ids = values.astype(object).where(values.notna().to_numpy(), "")
        array = np.array([hash_key(v) for v in ids.tolist()], dtype=object)
        if any(key is None for key in array.tolist()):
            raise ValueError(
                f"Hashed column {name!r} holds values that are no ids "
                "(strings or integers)."
            )
        return array
    if kind == "string":
        missing, unseen = _string_markers(column["values"])
        present = values.notna().to_numpy()
        text = values.astype(object).where(present, missing).astype(str)
        array = text.to_numpy(dtype=object)
        # A present value that reads as the missing marker is unseen.
        array[present & (array == missing)] = unseen
        return array
    if kind == "double":
        return values.to_numpy(dtype=np.float64, na_value=np.nan)
    if values.isna().any():
        raise ValueError(
            f"Column {name!r} has missing values, which its {kind} input cannot "
            "hold; fill them (an unseen value is encoded as unknown)."
        )
    return values.to_numpy(dtype=np.int64 if kind == "int64" else np.bool_)


class _Probabilities(nn.Module):
    """The fitted network with a sigmoid: (x_cat, x_num) -> probabilities."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x_cat: Tensor, x_num: Tensor) -> Tensor:
        return torch.sigmoid(self.network(x_cat, x_num))


def _network_inputs(estimator: MTLClassifier, n: int) -> tuple[Tensor, Tensor]:
    encoder = estimator.encoder_
    n_num = len(encoder.numerical_features_) + len(encoder.missing_indicator_features_)
    width = len(encoder.categorical_features_) + len(encoder.sequence_features_) * int(
        encoder.max_sequence_length
    )
    x_cat = torch.full((n, width), MISSING_CODE, dtype=torch.int64)
    return x_cat, torch.zeros((n, n_num), dtype=torch.float32)


def _exportable(estimator: MTLClassifier) -> nn.Module:
    """A float32 copy of the fitted network with a sigmoid, on the CPU.

    Warns for a model whose ``predict_proba`` runs in a lower precision:
    the export computes in float32, so the two differ by that rounding.
    """
    check_is_fitted(estimator)
    precision = str(estimator.precision)
    if precision != "float32":
        warnings.warn(
            f"The model's precision={precision!r}: its predict_proba runs the "
            f"matrix products in {precision}, while the exported model computes "
            "in float32, so their probabilities differ by up to about "
            f"{PRECISION_TOLERANCE[precision]:g} (1e-5 for a float32 model). "
            "Refit with precision='float32' for an export that reproduces "
            "predict_proba.",
            UserWarning,
            stacklevel=3,
        )
    # A copy: moving or freezing the fitted network itself would change the
    # estimator (e.g. move a GPU model to the CPU).
    module = copy.deepcopy(estimator.net_.module_).cpu().eval()
    return _Probabilities(module.requires_grad_(False)).eval()


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's notes (deprecations inside torch, optional
    torchvision operators), which are not about the user's model."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.filterwarnings(
                "ignore", message=".*axis name.*", category=UserWarning
            )
            yield
    finally:
        logger.setLevel(level)


def _dynamic_shapes() -> dict[str, dict[int, Any]]:
    batch = torch.export.Dim("batch", min=1)
    return {"x_cat": {0: batch}, "x_num": {0: batch}}


def to_torch(estimator: MTLClassifier, path: str | os.PathLike[str]) -> None:
    """Write the network as a ``torch.export`` program, with its encoding.

    The program maps ``x_cat`` (int64 codes, ``(n, n_categorical)``) and
    ``x_num`` (float32, ``(n, n_numerical + n_indicators)``) to the
    ``(n, n_tasks)`` probabilities, for any ``n``; the file also holds
    ``encoding.json`` (:func:`describe_encoding`), which says how to build
    those inputs from raw columns. Load it with ``torch.export.load(path,
    extra_files={"encoding.json": ""})``.

    Parameters
    ----------
    estimator : MTLClassifier or RMTLClassifier
        A fitted estimator; its network is exported on the CPU.
    path : str or path-like
        The ``.pt2`` file to write.

    Warns
    -----
    UserWarning
        For a model of ``precision="bfloat16"`` or ``"float16"``: the
        program computes in float32 (see :data:`PRECISION_TOLERANCE`).
    """
    module = _exportable(estimator)
    program = torch.export.export(
        module, _network_inputs(estimator, 2), dynamic_shapes=_dynamic_shapes()
    )
    encoding = json.dumps(describe_encoding(estimator))
    torch.export.save(program, path, extra_files={"encoding.json": encoding})


def to_onnx(
    estimator: MTLClassifier, path: str | os.PathLike[str] | None = None
) -> Any:
    """Export a fitted estimator, feature encoding included, as one ONNX graph.

    Parameters
    ----------
    estimator : MTLClassifier or RMTLClassifier
        A fitted estimator (for RMTL, the refitted actor is exported).
    path : str, path-like or None, default=None
        Where to write the ``.onnx`` file; None only returns the model.

    Returns
    -------
    model : onnx.ModelProto
        Inputs: one ``(n, 1)`` tensor per feature column (see the module
        docstring for their types); output ``probabilities``, ``(n,
        n_tasks)`` float32, the same as ``predict_proba`` within
        :data:`PRECISION_TOLERANCE` of the model's ``precision`` (1e-5 for
        float32). The encoding's description (:func:`describe_encoding`)
        and the task names are in the model's metadata.

    Raises
    ------
    ImportError
        Without onnx and onnxscript (``pip install "sklearn-rmtl[onnx]"``).
    ValueError
        When a feature column is named ``"probabilities"``, the output's
        name.

    Warns
    -----
    UserWarning
        For a model of ``precision="bfloat16"`` or ``"float16"``, whose
        ``predict_proba`` the float32 graph reproduces only to that
        precision's rounding.
    """
    onnx = _require("onnx")
    _require("onnxscript")
    description = describe_encoding(estimator)
    if any(c["name"] == _OUTPUT for c in description["columns"]):
        raise ValueError(
            f"Feature column {_OUTPUT!r} has the name of the ONNX graph's "
            "output, so it cannot also be an input; rename the column and refit."
        )
    module = _exportable(estimator)
    with _quiet_exporter():
        program = torch.onnx.export(
            module,
            _network_inputs(estimator, 2),
            input_names=["x_cat", "x_num"],
            output_names=["probabilities"],
            dynamic_shapes=_dynamic_shapes(),
            dynamo=True,
            verbose=False,
        )
    assert program is not None  # dynamo=True always returns a program
    network = program.model_proto
    opset = next(o.version for o in network.opset_import if o.domain == "")
    prefix = _internal_prefix([c["name"] for c in description["columns"]])
    encoding = _encoding_graph(onnx, description, opset, network.ir_version, prefix)
    # The network's names get a prefix too, so no column name can collide
    # with them; its output is then renamed back.
    model = onnx.compose.merge_models(
        encoding,
        network,
        io_map=[(prefix + "x_cat", "x_cat"), (prefix + "x_num", "x_num")],
        prefix2=prefix + "network/",
    )
    graph = model.graph
    graph.node.append(
        onnx.helper.make_node("Identity", [prefix + f"network/{_OUTPUT}"], [_OUTPUT])
    )
    graph.output[0].name = _OUTPUT
    for key, value in (
        ("sklearn_rmtl.encoding", json.dumps(description)),
        ("sklearn_rmtl.task_names", json.dumps(description["task_names"])),
    ):
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    if path is not None:
        onnx.save(model, os.fspath(path))
    return model


def _hash_nodes(
    h: Any, T: Any, nodes: list[Any], const: Any, x: str, c: str, buckets: int
) -> None:
    """Nodes from a hashed column's text ids ``x`` to its codes ``c + "code"``.

    ``2 + MurmurHash3(id) % buckets`` as :func:`~sklearn_rmtl._encoding.
    hash_codes` computes it, and the missing code where the id is ``""``.
    """
    empty = const(c + "empty", np.array([[""]], dtype=object))
    nodes += [
        h.make_node(
            "MurmurHash3",
            [x],
            [c + "hash"],
            domain="com.microsoft",
            seed=0,
            positive=1,
        ),
        h.make_node("Cast", [c + "hash"], [c + "hash64"], to=T.INT64),
        h.make_node(
            "Mod",
            [c + "hash64", const(c + "buckets", np.array([[buckets]], dtype=np.int64))],
            [c + "bucket"],
        ),
        h.make_node(
            "Add",
            [
                c + "bucket",
                const(c + "reserved", np.array([[UNKNOWN_CODE + 1]], dtype=np.int64)),
            ],
            [c + "hashed"],
        ),
        h.make_node("Equal", [x, empty], [c + "is_missing"]),
        h.make_node(
            "Where",
            [
                c + "is_missing",
                const(c + "missing", np.array([[MISSING_CODE]], dtype=np.int64)),
                c + "hashed",
            ],
            [c + "code"],
        ),
    ]


def _internal_prefix(columns: list[str]) -> str:
    """A prefix that no column name starts with, for the graph's own tensors.

    The inputs are named after the feature columns, so a column named like
    an internal tensor ("x_cat", "zero", "c0/mean"...) would break the
    graph's single assignment of every name.
    """
    prefix = "rmtl/"
    while any(c.startswith(prefix) for c in columns):
        prefix = "_" + prefix
    return prefix


def _encoding_graph(
    onnx: Any, description: dict, opset: int, ir_version: int, prefix: str
) -> Any:
    """Raw columns -> (``prefix`` + x_cat, ``prefix`` + x_num), as ONNX nodes.

    Every name but the inputs' starts with ``prefix`` (see
    :func:`_internal_prefix`).
    """
    h, T, nh = onnx.helper, onnx.TensorProto, onnx.numpy_helper
    nodes: list[Any] = []
    inputs: list[Any] = []
    codes: dict[str, str] = {}
    numbers: dict[str, str] = {}
    widths: dict[str, int] = {}

    def const(name: str, array: np.ndarray) -> str:
        # Made once, on first use: runtimes warn about unused constants.
        if not any(name in node.output for node in nodes):
            nodes.append(
                h.make_node("Constant", [], [name], value=nh.from_array(array, name))
            )
        return name

    for j, column in enumerate(description["columns"]):
        name, kind = column["name"], column["type"]
        x, c = name, f"{prefix}c{j}/"  # the input; its tensors' names
        width = column.get("length", 1)
        widths[name] = width
        inputs.append(
            h.make_tensor_value_info(x, getattr(T, _ONNX_TYPES[kind]), [None, width])
        )
        if column["role"] == "numerical":
            nan = c + "is_nan"
            nodes.append(h.make_node("IsNaN", [x], [nan]))
            mean = const(c + "mean", np.array([[column["mean"]]]))
            scale = const(c + "scale", np.array([[column["scale"]]]))
            zero = const(prefix + "zero", np.zeros((1, 1)))
            nodes += [
                h.make_node("Sub", [x, mean], [c + "centred"]),
                h.make_node("Div", [c + "centred", scale], [c + "scaled"]),
                h.make_node("Where", [nan, zero, c + "scaled"], [c + "imputed"]),
                h.make_node("Cast", [c + "imputed"], [c + "z"], to=T.FLOAT),
            ]
            numbers[name] = c + "z"
            if column["missing_indicator"]:
                nodes.append(h.make_node("Cast", [nan], [c + "indicator"], to=T.FLOAT))
                numbers[f"missingindicator_{name}"] = c + "indicator"
            continue
        if column.get("buckets"):
            _hash_nodes(h, T, nodes, const, x, c, column["buckets"])
            codes[name] = c + "code"
            continue
        keys, values = column["values"], column["codes"]
        if column["role"] == "sequence" and kind == "double":
            keys = [float(k) for k in keys]  # a sequence reads ids as float64
        if kind == "bool":
            nodes.append(h.make_node("Cast", [x], [c + "int"], to=T.INT64))
            x, kind, keys = c + "int", "int64", [int(k) for k in keys]
        if not keys:  # every training value was missing: all else is unknown
            placeholder: dict[str, Any] = {"int64": 0, "double": 0.0}
            placeholder["string"] = _string_markers([])[1]  # not "": missing
            keys, values = [placeholder[kind]], [UNKNOWN_CODE]
        key_type = getattr(T, _ONNX_TYPES[kind])
        key_data = [k.encode() for k in keys] if kind == "string" else keys
        nodes.append(
            h.make_node(
                "LabelEncoder",
                [x],
                [c + "looked_up"],
                domain="ai.onnx.ml",
                keys_tensor=h.make_tensor(c + "keys", key_type, [len(keys)], key_data),
                values_tensor=nh.from_array(np.asarray(values, dtype=np.int64)),
                default_tensor=nh.from_array(np.array([UNKNOWN_CODE], dtype=np.int64)),
            )
        )
        is_missing = None
        if kind == "double":
            is_missing = h.make_node("IsNaN", [x], [c + "is_missing"])
        elif kind == "string":  # its missing value is no known value
            marker = np.array([[column["missing_value"]]], dtype=object)
            missing_value = const(c + "missing_value", marker)
            is_missing = h.make_node("Equal", [x, missing_value], [c + "is_missing"])
        if is_missing is None:
            codes[name] = c + "looked_up"
        else:
            missing = const(
                prefix + "missing_code", np.array([[MISSING_CODE]], dtype=np.int64)
            )
            nodes += [
                is_missing,
                h.make_node(
                    "Where", [c + "is_missing", missing, c + "looked_up"], [c + "code"]
                ),
            ]
            codes[name] = c + "code"
    layout = description["layout"]
    outputs = []
    for output, names, tensors, dtype in (
        (prefix + "x_cat", layout["x_cat"], codes, T.INT64),
        (prefix + "x_num", layout["x_num"], numbers, T.FLOAT),
    ):
        parts = [tensors[name] for name in names]
        if parts:
            nodes.append(h.make_node("Concat", parts, [output], axis=1))
        else:  # no such columns: an (n, 0) input for the network
            first = description["columns"][0]["name"]
            no_columns = const(f"{output}/no_columns", np.array([1, 0], dtype=np.int64))
            nodes += [
                h.make_node("Shape", [first], [f"{output}/shape"]),
                h.make_node(
                    "Mul", [f"{output}/shape", no_columns], [f"{output}/empty"]
                ),
                h.make_node(
                    "ConstantOfShape",
                    [f"{output}/empty"],
                    [output],
                    value=h.make_tensor("value", dtype, [1], [0]),
                ),
            ]
        width = sum(widths.get(name, 1) for name in names)
        outputs.append(h.make_tensor_value_info(output, dtype, [None, width]))
    graph = h.make_graph(nodes, "sklearn_rmtl_encoding", inputs, outputs)
    domains = [h.make_opsetid("", opset), h.make_opsetid("ai.onnx.ml", 4)]
    if any(node.domain == "com.microsoft" for node in nodes):
        domains.append(h.make_opsetid("com.microsoft", 1))
    return h.make_model(
        graph,
        opset_imports=domains,
        ir_version=ir_version,
        producer_name="sklearn-rmtl",
    )


__all__ = [
    "PRECISION_TOLERANCE",
    "describe_encoding",
    "onnx_inputs",
    "to_onnx",
    "to_torch",
]
