"""Safe files for fitted estimators: JSON and plain arrays, never pickle.

There are two ways to store a fitted :class:`~sklearn_rmtl.MTLClassifier` or
:class:`~sklearn_rmtl.RMTLClassifier`:

- **joblib / pickle** (``joblib.dump(est, path)``): fast, and keeps any
  estimator exactly, including custom skorch ``callbacks``, a ``RandomState``
  as ``random_state``, subclasses and unfitted estimators. Loading a pickle
  *executes code* chosen by whoever wrote the file: load only files that you
  wrote or trust.
- **this module** (:func:`save` / :func:`load`): one zip holding a
  ``manifest.json`` and ``.npy`` arrays. Loading parses JSON, reads arrays
  with ``allow_pickle=False``, constructs only this library's own estimator,
  encoder, network and critic classes (a closed list) and fills in their
  weights. Use it for files from untrusted sources (shared, downloaded or
  uploaded models). It stores fitted estimators whose constructor parameters
  are plain values.

The format is this library's own, in the spirit of skops: a reader needs
only :mod:`json`, :mod:`zipfile` and NumPy, and ``manifest.json`` can be read
by hand before anything is loaded.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import warnings
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable
from typing import IO, Any

import numpy as np
import sklearn
import torch
from sklearn.preprocessing import OrdinalEncoder, StandardScaler
from sklearn.utils.validation import check_is_fitted
from torch import nn

from sklearn_rmtl._critic import Critic, SessionCritic
from sklearn_rmtl._encoding import FeatureEncoder
from sklearn_rmtl._mtl import MTLClassifier
from sklearn_rmtl._rmtl import RMTLClassifier
from sklearn_rmtl._seeding import isolated_global_rng
from sklearn_rmtl._skorch_net import MultiTaskNet, QWeightedNet
from sklearn_rmtl._torch_module import FeatureEmbedding
from sklearn_rmtl._torch_module import MultiTaskModule as MultiTaskNetwork
from sklearn_rmtl._training import make_net
from sklearn_rmtl._validation import resolve_device
from sklearn_rmtl._weighting import WEIGHTINGS
from sklearn_rmtl.backbones import BACKBONES, resolve_backbone_params
from sklearn_rmtl.exceptions import InconsistentVersionWarning, InvalidFileError

__all__ = ["InconsistentVersionWarning", "InvalidFileError", "load", "save"]

#: Value of ``manifest["format"]``; anything else is not one of these files.
FORMAT_NAME = "sklearn-rmtl-safe"
#: Layout version written by :func:`save`; :func:`load` reads this one.
FORMAT_VERSION = 1

_MANIFEST = "manifest.json"
_NPY = ".npy"
_TYPE = "__type__"
# Bounds what a hostile zip can make ``load`` decompress before any check.
_MAX_MANIFEST_BYTES = 1 << 30
# Room for an ``.npy`` header in front of an array's data.
_MAX_NPY_HEADER = 1 << 16
# Array dtypes stored as ``.npy``: booleans, integers, floats, fixed strings.
_NPY_KINDS = frozenset("biufU")
# A fixed zip timestamp: the same model always gives the same bytes.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)

# Closed allow-lists: the only classes a file can make ``load`` construct.
_ESTIMATORS: dict[str, type[MTLClassifier]] = {
    "MTLClassifier": MTLClassifier,
    "RMTLClassifier": RMTLClassifier,
}
_NETS: dict[str, type[MultiTaskNet]] = {
    "MultiTaskNet": MultiTaskNet,
    "QWeightedNet": QWeightedNet,
}

# Fitted attributes stored for each class, all required but those in
# ``_OPTIONAL``. Other instance attributes are not stored.
_MTL_FITTED = (
    "classes_",
    "n_tasks_",
    "task_names_",
    "n_features_in_",
    "feature_names_in_",
    "device_",
    "encoder_",
    "backbone_",
    "backbone_params_",
    "history_",
    "n_iter_",
)
_FITTED: dict[str, tuple[str, ...]] = {
    "MTLClassifier": _MTL_FITTED,
    "RMTLClassifier": (*_MTL_FITTED, "critic_", "refit_improved_", "label_weights_"),
}
_ENCODER_FITTED = (
    "n_features_in_",
    "feature_names_in_",
    "_cat_idx",
    "_num_idx",
    "categorical_features_",
    "numerical_features_",
    "ordinal_encoder_",
    "scaler_",
    "_indicator_idx",
    "missing_indicator_features_",
    "cardinalities_",
)
# What ``OrdinalEncoder.transform`` reads; ``infrequent_categories_`` is a
# property computed from ``_infrequent_indices``.
_ORDINAL_FITTED = (
    "n_features_in_",
    "feature_names_in_",
    "categories_",
    "_infrequent_enabled",
    "_infrequent_indices",
    "_default_to_infrequent_mappings",
    "_missing_indices",
)
_SCALER_FITTED = (
    "n_features_in_",
    "feature_names_in_",
    "n_samples_seen_",
    "mean_",
    "var_",
    "scale_",
)
# Set only with feature names, or (the mappings) with infrequent categories.
_OPTIONAL = frozenset(
    {
        "feature_names_in_",
        "_infrequent_indices",
        "_default_to_infrequent_mappings",
        "label_weights_",  # absent from files saved before it existed
    }
)
# Arguments of the skorch net built by ``MTLClassifier._train_net`` that
# survive ``trim_for_prediction``; the others are fixed by the library.
_NET_KWARGS = (
    "module__cardinalities",
    "module__n_numerical",
    "module__n_tasks",
    "module__backbone",
    "module__backbone_params",
    "criterion__task_weights",
    "optimizer__weight_decay",
    "lr",
    "max_epochs",
    "batch_size",
    "iterator_train__shuffle",
    "verbose",
)
_QNET_KWARGS = ("weighting", "q_lambda")
_CRITIC_KWARGS = (
    "cardinalities",
    "n_numerical",
    "n_tasks",
    "embedding_dim",
    "hidden_dims",
    "shared",
)


def _library_version() -> str:
    # Imported at call time, so that the package's __init__ may import us.
    import sklearn_rmtl

    return str(sklearn_rmtl.__version__)


def _torch_dtype_str(dtype: torch.dtype) -> str:
    """NumPy's ``dtype.str`` of a torch dtype (e.g. ``"<f4"``)."""
    return torch.empty(0, dtype=dtype).numpy().dtype.str


def _critic_kwargs(critic: Critic) -> dict[str, Any]:
    """The constructor arguments that rebuild ``critic`` (read off its layers)."""
    emb = critic.embeddings[0]
    if not isinstance(emb, FeatureEmbedding):
        raise TypeError(f"unexpected critic embedding {type(emb).__name__}")
    offsets = emb.offsets.cpu().numpy()
    total = emb.embedding.num_embeddings if emb.embedding is not None else 0
    cards = np.diff(np.append(offsets, total)).tolist()
    return {
        "cardinalities": [int(c) for c in cards],
        "n_numerical": int(emb.n_numerical),
        "n_tasks": int(critic.n_tasks),
        "embedding_dim": int(emb.embedding_dim),
        "hidden_dims": tuple(int(h) for h in critic.hidden_dims),
        "shared": bool(critic.shared),
    }


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------


class _Writer:
    """Turns an estimator into a JSON tree plus named arrays."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        # Objects shared between attributes (the critic's encoder is the
        # actor's) are written once and referenced by path, as pickle would.
        self._memo: dict[int, str] = {}
        self._alive: list[Any] = []

    def _seen(self, obj: Any, path: str) -> dict[str, Any] | None:
        if id(obj) in self._memo:
            return {_TYPE: "ref", "path": self._memo[id(obj)]}
        self._memo[id(obj)] = path
        self._alive.append(obj)  # ids stay unique while we write
        return None

    def _array_name(self, path: str) -> str:
        name = re.sub(r"[^A-Za-z0-9_./-]", "_", path)
        base, i = name, 1
        while name in self.arrays:
            i += 1
            name = f"{base}~{i}"
        return name

    # -- plain values ------------------------------------------------------
    def scalar(self, obj: Any, path: str) -> Any:
        """None, a bool, a number or a str (Python or NumPy)."""
        if isinstance(obj, np.generic):
            if obj.dtype.kind not in _NPY_KINDS:
                raise TypeError(f"{path}: cannot store a {obj.dtype} scalar.")
            value = self.scalar(obj.item(), path)
            return {_TYPE: "scalar", "dtype": obj.dtype.str, "value": value}
        if obj is None or isinstance(obj, bool | int | str):
            return obj
        if isinstance(obj, float):
            if math.isfinite(obj):
                return obj
            return {_TYPE: "float", "value": repr(obj)}
        raise TypeError(f"{path}: cannot store an object of type {type(obj).__name__}.")

    def array(self, arr: np.ndarray, path: str) -> dict[str, Any]:
        if arr.dtype.kind in _NPY_KINDS:
            name = self._array_name(path)
            self.arrays[name] = arr
            return {_TYPE: "ndarray", "name": name}
        if arr.dtype.kind == "O":
            # Categories and names: JSON values, never pickled objects.
            items = [self.scalar(v, f"{path}[{i}]") for i, v in enumerate(arr.flat)]
            return {_TYPE: "object_array", "shape": list(arr.shape), "items": items}
        raise TypeError(f"{path}: cannot store an array of dtype {arr.dtype}.")

    def value(self, obj: Any, path: str) -> Any:
        if isinstance(obj, np.ndarray):
            return self.array(obj, path)
        if isinstance(obj, list):
            return [self.value(v, f"{path}/{i}") for i, v in enumerate(obj)]
        if isinstance(obj, tuple):
            items = [self.value(v, f"{path}/{i}") for i, v in enumerate(obj)]
            return {_TYPE: "tuple", "items": items}
        if isinstance(obj, dict):
            if all(type(k) is str for k in obj) and _TYPE not in obj:
                return {k: self.value(v, f"{path}/{k}") for k, v in obj.items()}
            pairs = [
                [self.scalar(k, path), self.value(v, f"{path}/{i}")]
                for i, (k, v) in enumerate(obj.items())
            ]
            return {_TYPE: "dict", "items": pairs}
        return self.scalar(obj, path)

    def attributes(
        self,
        obj: Any,
        names: tuple[str, ...],
        path: str,
        special: dict[str, Callable[[Any, str], Any]] | None = None,
    ) -> dict[str, Any]:
        """Fitted attributes ``names`` of ``obj``; ``special`` ones by type."""
        special = special or {}
        out = {}
        for name in names:
            where = f"{path}/{name}"
            if name not in vars(obj):
                if name in _OPTIONAL:
                    continue
                raise ValueError(
                    f"{where}: the fitted {type(obj).__name__} has no attribute "
                    f"{name!r}, so it cannot be saved."
                )
            val = vars(obj)[name]
            if name in special and val is not None:
                out[name] = special[name](val, where)
            else:
                out[name] = self.value(val, where)
        return out

    def state_dict(self, module: nn.Module, path: str) -> dict[str, str]:
        out = {}
        for key, tensor in module.state_dict().items():
            try:
                arr = tensor.detach().cpu().contiguous().numpy()
            except TypeError as exc:  # e.g. bfloat16 has no NumPy dtype
                raise TypeError(f"{path}/{key}: {exc}") from exc
            name = self._array_name(f"{path}/{key}")
            self.arrays[name] = arr
            out[key] = name
        return out

    # -- library objects ---------------------------------------------------
    def estimator(self, est: MTLClassifier, path: str) -> dict[str, Any]:
        ref = self._seen(est, path)
        if ref is not None:
            return ref
        name = type(est).__name__
        if _ESTIMATORS.get(name) is not type(est):
            raise TypeError(
                f"The safe format stores {sorted(_ESTIMATORS)} only, not "
                f"{type(est).__module__}.{type(est).__qualname__}; use joblib "
                "for other estimators (and load such files only if you trust "
                "them)."
            )
        params = {}
        for key, val in est.get_params(deep=False).items():
            where = f"{path}/params/{key}"
            if isinstance(val, MTLClassifier):
                params[key] = self.estimator(val, where)
            elif isinstance(val, SessionCritic):
                params[key] = self.session_critic(val, where)
            else:
                try:
                    params[key] = self.value(val, where)
                except TypeError as exc:
                    raise TypeError(
                        f"{name} parameter {key}={val!r} cannot be stored in "
                        f"the safe format. The fitted state can, but "
                        "constructor parameters must be plain values (None, "
                        "bool, int, float, str, lists, tuples, dicts, NumPy "
                        "arrays), an MTLClassifier or a SessionCritic. Set a "
                        f"plain value first, e.g. est.set_params({key}=None) "
                        "(the fitted attributes are kept), or use joblib for "
                        "files you trust."
                    ) from exc
        fitted = None
        if est.__sklearn_is_fitted__():
            fitted = self.attributes(
                est,
                _FITTED[name],
                path,
                {
                    "encoder_": self.encoder,
                    "backbone_": self.net,
                    "critic_": self.session_critic,
                },
            )
        return {_TYPE: "estimator", "class": name, "params": params, "fitted": fitted}

    def encoder(self, enc: FeatureEncoder, path: str) -> dict[str, Any]:
        ref = self._seen(enc, path)
        if ref is not None:
            return ref
        if type(enc) is not FeatureEncoder:
            raise TypeError(f"{path}: expected a FeatureEncoder, got {type(enc)}.")
        return {
            _TYPE: "FeatureEncoder",
            "params": self.value(enc.get_params(deep=False), f"{path}/params"),
            "fitted": self.attributes(
                enc,
                _ENCODER_FITTED,
                path,
                {"ordinal_encoder_": self.ordinal, "scaler_": self.scaler},
            ),
        }

    def ordinal(self, enc: OrdinalEncoder, path: str) -> dict[str, Any]:
        if type(enc) is not OrdinalEncoder:
            raise TypeError(f"{path}: expected an OrdinalEncoder, got {type(enc)}.")
        params = enc.get_params(deep=False)
        params["dtype"] = np.dtype(params["dtype"]).str
        return {
            _TYPE: "OrdinalEncoder",
            "params": self.value(params, f"{path}/params"),
            "fitted": self.attributes(enc, _ORDINAL_FITTED, path),
        }

    def scaler(self, scaler: StandardScaler, path: str) -> dict[str, Any]:
        if type(scaler) is not StandardScaler:
            raise TypeError(f"{path}: expected a StandardScaler, got {type(scaler)}.")
        return {
            _TYPE: "StandardScaler",
            "params": self.value(scaler.get_params(deep=False), f"{path}/params"),
            "fitted": self.attributes(scaler, _SCALER_FITTED, path),
        }

    def net(self, net: MultiTaskNet, path: str) -> dict[str, Any]:
        name = type(net).__name__
        if _NETS.get(name) is not type(net) or net.module is not MultiTaskNetwork:
            raise TypeError(f"{path}: cannot store a {name} of {net.module!r}.")
        keys = _NET_KWARGS + (_QNET_KWARGS if name == "QWeightedNet" else ())
        kwargs = {k: self.value(getattr(net, k), f"{path}/{k}") for k in keys}
        return {
            _TYPE: "net",
            "class": name,
            "kwargs": kwargs,
            "state_dict": self.state_dict(net.module_, f"{path}/module_"),
        }

    def session_critic(self, critic: SessionCritic, path: str) -> dict[str, Any]:
        ref = self._seen(critic, path)
        if ref is not None:
            return ref
        if type(critic) is not SessionCritic or type(critic.module) is not Critic:
            raise TypeError(f"{path}: expected a SessionCritic, got {type(critic)}.")
        return {
            _TYPE: "SessionCritic",
            "encoder": self.encoder(critic.encoder, f"{path}/encoder"),
            "module": {
                "kwargs": self.value(_critic_kwargs(critic.module), f"{path}/kwargs"),
                "state_dict": self.state_dict(critic.module, f"{path}/module"),
            },
            "task_names": self.value(critic.task_names, f"{path}/task_names"),
            "history": self.value(critic.history, f"{path}/history"),
        }


def save(estimator: MTLClassifier, path: str | os.PathLike[str] | IO[bytes]) -> None:
    """Save a fitted estimator in the safe format (JSON and arrays, no pickle).

    Writes one zip file: ``manifest.json`` (format and library versions, the
    class, the constructor parameters, the fitted attributes, the encoders'
    vocabularies as JSON) and one ``.npy`` file per array (network weights,
    scaler statistics, index arrays). Read it back with :func:`load`.

    Parameters
    ----------
    estimator : MTLClassifier or RMTLClassifier
        A fitted estimator of exactly one of these classes (not a subclass).
        Its constructor parameters must be plain values (None, bool, int,
        float, str, lists, tuples, dicts, NumPy arrays), or for
        :class:`~sklearn_rmtl.RMTLClassifier` an ``MTLClassifier`` as
        ``backbone`` and a :class:`~sklearn_rmtl.SessionCritic` as
        ``critic``, which are stored with it.
    path : str, path-like or binary file object
        Where to write; an existing file is overwritten. Any name works; the
        content is a zip archive.

    Raises
    ------
    sklearn.exceptions.NotFittedError
        If ``estimator`` is not fitted: only fitted models are stored (use
        joblib or ``get_params`` for a configuration).
    TypeError
        If ``estimator`` is of another class, or a constructor parameter is
        not a plain value, e.g. skorch ``callbacks`` or a ``RandomState`` as
        ``random_state``. Replace it first with ``set_params`` (fitted
        attributes are kept) or use joblib.

    See Also
    --------
    load : Read a file written by this function.
    joblib.dump : Stores any estimator, but loading executes code.

    Notes
    -----
    Use this format for files that may reach untrusted hands or come from
    them; use joblib (pickle) for your own files, where speed and exact
    fidelity of arbitrary parameters matter more. Network weights are
    stored from the CPU, so a model trained on a GPU loads on a CPU. Only
    the constructor parameters and the documented fitted attributes are
    stored; other attributes set on the instance (such as metadata-routing
    requests) are not. Saving the same model twice gives identical bytes.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from sklearn_rmtl import MTLClassifier
    >>> from sklearn_rmtl.persistence import load, save
    >>> rng = np.random.default_rng(0)
    >>> X, Y = rng.normal(size=(100, 3)), rng.integers(0, 2, size=(100, 2))
    >>> clf = MTLClassifier(backbone="sharedbottom", max_epochs=2, random_state=0,
    ...                     backbone_params={"embedding_dim": 4, "bottom_dims": (8,),
    ...                                      "tower_dims": (4,)}).fit(X, Y)
    >>> path = os.path.join(tempfile.mkdtemp(), "model.rmtl")
    >>> save(clf, path)
    >>> bool(np.array_equal(load(path).predict_proba(X), clf.predict_proba(X)))
    True
    """
    if not isinstance(estimator, MTLClassifier):
        raise TypeError(
            f"save stores {sorted(_ESTIMATORS)}, got {type(estimator).__name__}."
        )
    check_is_fitted(
        estimator,
        msg=(
            f"This {type(estimator).__name__} is not fitted yet; the safe format "
            "stores fitted models only. Call fit before save (an unfitted "
            "configuration is just get_params(), or use joblib)."
        ),
    )
    writer = _Writer()
    root = writer.estimator(estimator, "estimator")
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "sklearn_rmtl_version": _library_version(),
        "environment": {
            "scikit-learn": sklearn.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
        },
        "arrays": {
            name: {"dtype": arr.dtype.str, "shape": list(arr.shape)}
            for name, arr in writer.arrays.items()
        },
        "estimator": root,
    }
    text = json.dumps(manifest, indent=1, allow_nan=False)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(_zip_info(_MANIFEST, zipfile.ZIP_DEFLATED), text)
        # Trained float weights shrink by a few percent at most when deflated,
        # at ~20x the time of writing them: arrays are stored as they are.
        for name, arr in writer.arrays.items():
            with zf.open(_zip_info(name + _NPY, zipfile.ZIP_STORED), "w") as f:
                np.lib.format.write_array(f, arr, allow_pickle=False)


def _zip_info(name: str, compression: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    info.compress_type = compression
    return info


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------


def _fail(path: str, message: str) -> InvalidFileError:
    return InvalidFileError(f"Invalid sklearn_rmtl safe file at {path}: {message}")


def _expect(node: Any, keys: set[str], path: str) -> dict[str, Any]:
    if not isinstance(node, dict) or set(node) != keys:
        found = sorted(node) if isinstance(node, dict) else type(node).__name__
        raise _fail(path, f"expected an object with keys {sorted(keys)}, got {found}")
    return node


def _int(node: Any, path: str) -> int:
    if type(node) is not int or node < 0:
        raise _fail(path, f"expected a non-negative integer, got {node!r}")
    return node


def _dtype(text: Any, path: str, kinds: frozenset[str] = _NPY_KINDS) -> np.dtype:
    try:
        dtype = np.dtype(text) if isinstance(text, str) else None
    except (TypeError, ValueError, SyntaxError):
        dtype = None
    if dtype is None or dtype.kind not in kinds or dtype.hasobject:
        raise _fail(path, f"unsupported dtype {text!r}")
    return dtype


class _Reader:
    """Rebuilds objects from a manifest tree; every step is validated."""

    def __init__(self, zf: zipfile.ZipFile, table: Any, device: str) -> None:
        if not isinstance(table, dict):
            raise _fail("arrays", "expected an object")
        self.zf = zf
        self.device = device
        self.table: dict[str, tuple[np.dtype, tuple[int, ...]]] = {}
        for name, entry in table.items():
            entry = _expect(entry, {"dtype", "shape"}, f"arrays/{name}")
            if not isinstance(entry["shape"], list):
                raise _fail(f"arrays/{name}", "shape must be a list")
            shape = tuple(_int(s, f"arrays/{name}") for s in entry["shape"])
            self.table[name] = (_dtype(entry["dtype"], f"arrays/{name}"), shape)
        members = zf.namelist()
        expected = {_MANIFEST} | {name + _NPY for name in self.table}
        duplicated = sorted(m for m, n in Counter(members).items() if n > 1)
        extra = sorted(set(members) - expected)
        missing = sorted(expected - set(members))
        if duplicated or extra or missing:
            raise _fail(
                "archive",
                "its files do not match the manifest (extra: "
                f"{extra}, duplicated: {duplicated}, missing: {missing})",
            )
        self.used: set[str] = set()
        self.objects: dict[str, Any] = {}

    # -- arrays --------------------------------------------------------------
    def array(self, name: Any, path: str) -> np.ndarray:
        if not isinstance(name, str) or name not in self.table:
            raise _fail(path, f"refers to an unknown array {name!r}")
        if name in self.used:
            raise _fail(path, f"array {name!r} is referenced twice")
        self.used.add(name)
        dtype, shape = self.table[name]
        nbytes = dtype.itemsize * math.prod(shape)
        info = self.zf.getinfo(name + _NPY)
        if not nbytes <= info.file_size <= nbytes + _MAX_NPY_HEADER:
            raise _fail(path, f"array {name!r} has the wrong size")
        try:
            data = self.zf.read(info)
        except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as exc:
            raise _fail(path, f"array {name!r} cannot be read ({exc})") from exc
        stream = io.BytesIO(data)
        try:
            version = np.lib.format.read_magic(stream)
            if version == (1, 0):
                header = np.lib.format.read_array_header_1_0(stream)
            elif version == (2, 0):
                header = np.lib.format.read_array_header_2_0(stream)
            else:
                raise ValueError(f"unsupported .npy version {version}")
        except (ValueError, SyntaxError, TypeError) as exc:
            raise _fail(
                path, f"array {name!r} is not a valid .npy file ({exc})"
            ) from exc
        file_shape, _, file_dtype = header
        if (
            file_dtype.hasobject
            or file_dtype != dtype
            or tuple(file_shape) != shape
            or len(data) - stream.tell() != nbytes
        ):
            raise _fail(
                path,
                f"array {name!r} holds {file_dtype} {tuple(file_shape)}, not the "
                f"{dtype} {shape} the manifest declares",
            )
        stream.seek(0)
        return np.load(stream, allow_pickle=False)

    # -- plain values --------------------------------------------------------
    def scalar(self, node: Any, path: str) -> Any:
        if node is None or isinstance(node, bool | int | float | str):
            return node
        tag = node.get(_TYPE) if isinstance(node, dict) else None
        if tag == "float":
            node = _expect(node, {_TYPE, "value"}, path)
            if node["value"] not in ("nan", "inf", "-inf"):
                raise _fail(path, f"invalid float {node['value']!r}")
            return float(node["value"])
        if tag == "scalar":
            node = _expect(node, {_TYPE, "dtype", "value"}, path)
            dtype = _dtype(node["dtype"], path)
            value = self.scalar(node["value"], path)
            if isinstance(value, dict | list) or value is None:
                raise _fail(path, "invalid scalar value")
            try:
                return dtype.type(value)
            except (TypeError, ValueError, OverflowError) as exc:
                raise _fail(path, f"invalid {dtype} scalar {value!r}") from exc
        raise _fail(path, f"expected a scalar, got {str(node)[:80]}")

    def value(self, node: Any, path: str) -> Any:
        if isinstance(node, list):
            return [self.value(v, f"{path}/{i}") for i, v in enumerate(node)]
        if not isinstance(node, dict):
            return self.scalar(node, path)
        if _TYPE not in node:
            return {k: self.value(v, f"{path}/{k}") for k, v in node.items()}
        tag = node[_TYPE]
        if tag == "tuple":
            items = _expect(node, {_TYPE, "items"}, path)["items"]
            if not isinstance(items, list):
                raise _fail(path, "tuple items must be a list")
            return tuple(self.value(v, f"{path}/{i}") for i, v in enumerate(items))
        if tag == "dict":
            pairs = _expect(node, {_TYPE, "items"}, path)["items"]
            if not isinstance(pairs, list) or not all(
                isinstance(p, list) and len(p) == 2 for p in pairs
            ):
                raise _fail(path, "dict items must be [key, value] pairs")
            return {
                self.scalar(k, path): self.value(v, f"{path}/{i}")
                for i, (k, v) in enumerate(pairs)
            }
        if tag == "ndarray":
            return self.array(_expect(node, {_TYPE, "name"}, path)["name"], path)
        if tag == "object_array":
            node = _expect(node, {_TYPE, "shape", "items"}, path)
            if not isinstance(node["shape"], list) or not isinstance(
                node["items"], list
            ):
                raise _fail(path, "object_array needs a shape and an items list")
            shape = tuple(_int(s, path) for s in node["shape"])
            if math.prod(shape) != len(node["items"]):
                raise _fail(path, f"{len(node['items'])} items do not fill {shape}")
            out = np.empty(len(node["items"]), dtype=object)
            for i, v in enumerate(node["items"]):
                out[i] = self.scalar(v, f"{path}[{i}]")
            return out.reshape(shape)
        return self.scalar(node, path)

    def attributes(
        self,
        node: Any,
        names: tuple[str, ...],
        path: str,
        special: dict[str, Callable[[Any, str], Any]] | None = None,
    ) -> dict[str, Any]:
        if not isinstance(node, dict):
            raise _fail(path, "fitted attributes must be an object")
        unknown = sorted(set(node) - set(names))
        missing = sorted(set(names) - set(node) - _OPTIONAL)
        if unknown or missing:
            raise _fail(path, f"unknown attributes {unknown}, missing {missing}")
        special = special or {}
        out = {}
        for name in names:
            if name not in node:
                continue
            where = f"{path}/{name}"
            if name in special and node[name] is not None:
                out[name] = special[name](node[name], where)
            else:
                out[name] = self.value(node[name], where)
        return out

    def _construct(self, cls: Any, params: Any, path: str) -> Any:
        params = self.value(params, f"{path}/params")
        if not isinstance(params, dict):
            raise _fail(path, "params must be an object")
        return self._build(cls, params, path)

    def _build(self, cls: Any, params: dict[str, Any], path: str) -> Any:
        unknown = sorted(set(params) - set(cls._get_param_names()))
        if unknown:
            raise _fail(path, f"{cls.__name__} has no parameters {unknown}")
        obj = cls(**params)
        try:
            obj._validate_params()
        except (TypeError, ValueError) as exc:
            raise _fail(path, f"invalid {cls.__name__} parameters: {exc}") from exc
        return obj

    def _ref(self, node: Any, path: str, kind: type) -> Any | None:
        if not (isinstance(node, dict) and node.get(_TYPE) == "ref"):
            return None
        target = _expect(node, {_TYPE, "path"}, path)["path"]
        obj = self.objects.get(target) if isinstance(target, str) else None
        if not isinstance(obj, kind):
            raise _fail(path, f"refers to {target!r}, which is no {kind.__name__}")
        return obj

    def _tag(self, node: Any, tag: str, keys: set[str], path: str) -> dict[str, Any]:
        node = _expect(node, {_TYPE, *keys}, path)
        if node[_TYPE] != tag:
            raise _fail(path, f"expected a {tag}, got {node[_TYPE]!r}")
        return node

    def state_dict(self, module: nn.Module, node: Any, path: str) -> None:
        """Load the arrays named by ``node`` into ``module`` (exact match)."""
        if not isinstance(node, dict):
            raise _fail(path, "state_dict must be an object")
        expected = module.state_dict()
        unknown = sorted(set(node) - set(expected))
        missing = sorted(set(expected) - set(node))
        if unknown or missing:
            raise _fail(
                path,
                f"weights do not match the rebuilt network (unknown: {unknown}, "
                f"missing: {missing})",
            )
        state = {}
        for key, tensor in expected.items():
            arr = self.array(node[key], f"{path}/{key}")
            if arr.shape != tuple(tensor.shape) or arr.dtype.str != _torch_dtype_str(
                tensor.dtype
            ):
                raise _fail(
                    f"{path}/{key}",
                    f"array of {arr.dtype} {arr.shape} does not fit the rebuilt "
                    f"network's {tensor.dtype} {tuple(tensor.shape)}",
                )
            state[key] = torch.from_numpy(np.array(arr))
        module.load_state_dict(state, strict=True)

    # -- library objects -----------------------------------------------------
    def estimator(self, node: Any, path: str) -> MTLClassifier:
        ref = self._ref(node, path, MTLClassifier)
        if ref is not None:
            return ref
        node = self._tag(node, "estimator", {"class", "params", "fitted"}, path)
        cls = _ESTIMATORS.get(node["class"]) if isinstance(node["class"], str) else None
        if cls is None:
            raise _fail(
                path,
                f"class {str(node['class'])[:80]!r} is not one of "
                f"{sorted(_ESTIMATORS)}",
            )
        raw = node["params"]
        if not isinstance(raw, dict):
            raise _fail(path, "params must be an object")
        params = {}
        for key, val in raw.items():
            where = f"{path}/params/{key}"
            tag = val.get(_TYPE) if isinstance(val, dict) else None
            if tag == "ref":
                target = val.get("path")
                shared = self.objects.get(target) if isinstance(target, str) else None
                kind = MTLClassifier if isinstance(shared, MTLClassifier) else None
                params[key] = self._ref(val, where, kind or SessionCritic)
            elif tag == "estimator":
                params[key] = self.estimator(val, where)
            elif tag == "SessionCritic":
                params[key] = self.session_critic(val, where)
            else:
                params[key] = self.value(val, where)
        est = self._build(cls, params, path)
        self.objects[path] = est
        if node["fitted"] is not None:
            fitted = self.attributes(
                node["fitted"],
                _FITTED[cls.__name__],
                path,
                {
                    "encoder_": self.encoder,
                    "backbone_": self.net,
                    "critic_": self.session_critic,
                },
            )
            est.__dict__.update(fitted)
            self._check_estimator(est, path)
        return est

    def _check_estimator(self, est: MTLClassifier, path: str) -> None:
        net = est.net_
        encoder = est.encoder_
        if (
            not isinstance(net, MultiTaskNet)
            or not isinstance(encoder, FeatureEncoder)
            or list(net.module__cardinalities) != encoder.cardinalities_.tolist()
            or net.module__n_tasks != est.n_tasks_
        ):
            raise _fail(path, "the encoder, network and tasks do not fit together")

    def encoder(self, node: Any, path: str) -> FeatureEncoder:
        ref = self._ref(node, path, FeatureEncoder)
        if ref is not None:
            return ref
        node = self._tag(node, "FeatureEncoder", {"params", "fitted"}, path)
        enc = self._construct(FeatureEncoder, node["params"], path)
        enc.__dict__.update(
            self.attributes(
                node["fitted"],
                _ENCODER_FITTED,
                path,
                {"ordinal_encoder_": self.ordinal, "scaler_": self.scaler},
            )
        )
        self.objects[path] = enc
        return enc

    def ordinal(self, node: Any, path: str) -> OrdinalEncoder:
        node = self._tag(node, "OrdinalEncoder", {"params", "fitted"}, path)
        params = self.value(node["params"], f"{path}/params")
        if not isinstance(params, dict):
            raise _fail(path, "params must be an object")
        params["dtype"] = _dtype(params.get("dtype"), path, frozenset("iuf")).type
        enc = self._build(OrdinalEncoder, params, path)
        enc.__dict__.update(self.attributes(node["fitted"], _ORDINAL_FITTED, path))
        return enc

    def scaler(self, node: Any, path: str) -> StandardScaler:
        node = self._tag(node, "StandardScaler", {"params", "fitted"}, path)
        scaler = self._construct(StandardScaler, node["params"], path)
        scaler.__dict__.update(self.attributes(node["fitted"], _SCALER_FITTED, path))
        return scaler

    def net(self, node: Any, path: str) -> MultiTaskNet:
        node = self._tag(node, "net", {"class", "kwargs", "state_dict"}, path)
        name = node["class"]
        net_cls = _NETS.get(name) if isinstance(name, str) else None
        if net_cls is None:
            raise _fail(path, f"network class {str(name)[:80]!r} is not allowed")
        keys = _NET_KWARGS + (_QNET_KWARGS if net_cls is QWeightedNet else ())
        kwargs = self.value(node["kwargs"], f"{path}/kwargs")
        if not isinstance(kwargs, dict) or set(kwargs) != set(keys):
            found = sorted(kwargs) if isinstance(kwargs, dict) else kwargs
            raise _fail(path, f"network arguments must be {sorted(keys)}, got {found}")
        backbone = kwargs["module__backbone"]
        if backbone not in BACKBONES:
            raise _fail(path, f"unknown backbone {str(backbone)[:80]!r}")
        params = kwargs["module__backbone_params"]
        try:
            valid = resolve_backbone_params(backbone, params).keys() == params.keys()
        except (AttributeError, TypeError, ValueError):
            valid = False
        if not valid:
            raise _fail(path, f"invalid backbone_params {str(params)[:200]}")
        if net_cls is QWeightedNet:
            if kwargs["weighting"] not in WEIGHTINGS:
                raise _fail(path, f"unknown weighting {kwargs['weighting']!r}")
            kwargs["critic"] = None  # dropped after the refit, as in fit
        net = make_net(net_cls, device=self.device, **kwargs)
        try:
            with isolated_global_rng(self.device):  # leaves the caller's RNG alone
                net.initialize()
        except (TypeError, ValueError, RuntimeError) as exc:
            raise _fail(path, f"the network cannot be rebuilt ({exc})") from exc
        self.state_dict(net.module_, node["state_dict"], f"{path}/module_")
        net.trim_for_prediction()
        return net

    def session_critic(self, node: Any, path: str) -> SessionCritic:
        ref = self._ref(node, path, SessionCritic)
        if ref is not None:
            return ref
        node = self._tag(
            node, "SessionCritic", {"encoder", "module", "task_names", "history"}, path
        )
        encoder = self.encoder(node["encoder"], f"{path}/encoder")
        module_node = _expect(node["module"], {"kwargs", "state_dict"}, path)
        kwargs = self.value(module_node["kwargs"], f"{path}/kwargs")
        if not isinstance(kwargs, dict) or set(kwargs) != set(_CRITIC_KWARGS):
            raise _fail(path, f"critic arguments must be {sorted(_CRITIC_KWARGS)}")
        try:
            with isolated_global_rng("cpu"):
                module = Critic(**kwargs)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise _fail(path, f"the critic cannot be rebuilt ({exc})") from exc
        self.state_dict(module, module_node["state_dict"], f"{path}/module")
        task_names = self.value(node["task_names"], f"{path}/task_names")
        history = self.value(node["history"], f"{path}/history")
        if not isinstance(task_names, np.ndarray) or not isinstance(history, list):
            raise _fail(path, "task_names must be an array and history a list")
        critic = SessionCritic(
            encoder=encoder,
            module=module.eval(),
            task_names=task_names,
            history=history,
        )
        self.objects[path] = critic
        return critic


def load(
    path: str | os.PathLike[str] | IO[bytes], *, device: str = "cpu"
) -> MTLClassifier:
    """Load an estimator saved by :func:`save`, without unpickling anything.

    The manifest is parsed as JSON and checked; the estimator, its encoders,
    networks and critics are constructed from a closed list of this
    library's classes, and the weights are read with
    ``np.load(..., allow_pickle=False)`` and must match the rebuilt networks
    exactly. Safe for files from untrusted sources.

    Parameters
    ----------
    path : str, path-like or binary file object
        A file written by :func:`save`.
    device : {"cpu", "cuda", "auto"} or str, default="cpu"
        Torch device of the loaded network (any torch device string works).
        The critics of an :class:`~sklearn_rmtl.RMTLClassifier` stay on the
        CPU, where :meth:`~sklearn_rmtl.RMTLClassifier.loss_weights` uses them.

    Returns
    -------
    estimator : MTLClassifier or RMTLClassifier
        The fitted estimator, ready for ``predict_proba``; its constructor
        parameters are the saved ones, so ``clone`` and ``get_params`` work.

    Raises
    ------
    InvalidFileError
        If the file is not a zip written by :func:`save`, or has been
        tampered with: missing or malformed manifest, wrong format name or
        version, a class outside the allow-list, missing, extra or
        non-numeric arrays, or weights that do not fit the rebuilt networks.

    Warns
    -----
    InconsistentVersionWarning
        If the file was written by another version of sklearn_rmtl or
        scikit-learn; the warning names both versions.

    See Also
    --------
    save : Write a file in this format.
    joblib.load : Loads any pickle, but executes code: trusted files only.

    Notes
    -----
    Loading cannot run code chosen by the file's author. It can, like any
    reader of compressed arrays, allocate as much memory as the sizes the
    file declares. Prefer joblib for your own files (faster, stores any
    estimator); prefer this format whenever a file crosses a trust boundary.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np, pandas as pd
    >>> from sklearn_rmtl import RMTLClassifier
    >>> from sklearn_rmtl.persistence import load, save
    >>> rng = np.random.default_rng(0)
    >>> X = pd.DataFrame({"item": rng.choice(["a", "b", "c"], 200),
    ...                   "price": rng.normal(size=200)})
    >>> Y = rng.integers(0, 2, size=(200, 2))
    >>> small = {"embedding_dim": 4, "bottom_dims": (8,), "tower_dims": (4,)}
    >>> clf = RMTLClassifier(backbone="sharedbottom", backbone_params=small,
    ...                      critic_hidden_dims=(8,), max_epochs=2,
    ...                      critic_max_epochs=2, random_state=0)
    >>> clf = clf.fit(X, Y, session_ids=np.repeat(np.arange(20), 10))
    >>> path = os.path.join(tempfile.mkdtemp(), "rmtl.zip")
    >>> save(clf, path)
    >>> loaded = load(path)
    >>> bool(np.array_equal(loaded.loss_weights(X, Y), clf.loss_weights(X, Y)))
    True
    """
    try:
        torch.device(device)
    except (TypeError, RuntimeError) as exc:
        raise ValueError(
            f"device must be a torch device string, got {device!r}"
        ) from exc
    device = resolve_device(device)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, EOFError) as exc:
        raise InvalidFileError(
            f"{path!r} is not a sklearn_rmtl safe file: not a zip archive "
            f"({exc}). Files from joblib or pickle load with joblib.load, and "
            "only when you trust them."
        ) from exc
    with zf:
        manifest = _read_manifest(zf)
        _check_versions(manifest)
        reader = _Reader(zf, manifest["arrays"], device)
        try:
            estimator = reader.estimator(manifest["estimator"], "estimator")
        except RecursionError as exc:
            raise _fail("estimator", "the manifest is nested too deeply") from exc
        if not estimator.__sklearn_is_fitted__():
            raise _fail("estimator", "the file holds no fitted estimator")
        unused = sorted(set(reader.table) - reader.used)
        if unused:
            raise _fail("arrays", f"arrays {unused} are not used by the estimator")
    return estimator


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; ``save`` tags non-finite floats instead.
    raise ValueError(f"{name} is not valid JSON")


def _read_manifest(zf: zipfile.ZipFile) -> dict[str, Any]:
    try:
        info = zf.getinfo(_MANIFEST)
    except KeyError:
        raise InvalidFileError(
            f"Not a sklearn_rmtl safe file: the zip has no {_MANIFEST}."
        ) from None
    if info.file_size > _MAX_MANIFEST_BYTES:
        raise _fail(_MANIFEST, "the manifest is implausibly large")
    try:
        manifest = json.loads(
            zf.read(info).decode("utf-8"), parse_constant=_reject_constant
        )
    except (ValueError, RecursionError, zipfile.BadZipFile, zlib.error) as exc:
        raise _fail(_MANIFEST, f"not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise InvalidFileError(
            f"Not a sklearn_rmtl safe file: format is {str(found)[:80]!r}, "
            f"expected {FORMAT_NAME!r}."
        )
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise InvalidFileError(
            f"The file uses version {version!r} of the sklearn_rmtl safe format; "
            f"this sklearn_rmtl ({_library_version()}) reads version "
            f"{FORMAT_VERSION}. Load it with the sklearn_rmtl version that "
            "wrote it."
        )
    keys = {
        "format",
        "format_version",
        "sklearn_rmtl_version",
        "environment",
        "arrays",
        "estimator",
    }
    if set(manifest) != keys:
        raise _fail(
            _MANIFEST, f"expected the keys {sorted(keys)}, got {sorted(manifest)}"
        )
    return manifest


def _check_versions(manifest: dict[str, Any]) -> None:
    written = str(manifest["sklearn_rmtl_version"])[:80]
    env = manifest["environment"]
    written_sklearn = (
        str(env.get("scikit-learn"))[:80] if isinstance(env, dict) else "?"
    )
    current = _library_version()
    if written != current or written_sklearn != sklearn.__version__:
        warnings.warn(
            InconsistentVersionWarning(
                f"This file was written by sklearn_rmtl {written} with "
                f"scikit-learn {written_sklearn}; it is being loaded by "
                f"sklearn_rmtl {current} with scikit-learn {sklearn.__version__}. "
                "The estimator is rebuilt, but the networks or encoders may "
                "behave differently across versions: check its predictions, or "
                "refit with this version and save again.",
                original_version=written,
                current_version=current,
            ),
            stacklevel=3,
        )
