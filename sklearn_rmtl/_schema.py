"""What each of this library's classes is stored as in the safe format.

The container (:mod:`sklearn_rmtl._container`) stores plain values; this
module maps estimators, encoders, networks and critics onto them, and back
onto a closed list of classes. Each class describes its own configuration:
estimators (:class:`~sklearn_rmtl.SessionCritic` included) by ``get_params``
and their documented fitted attributes, the feature encoder by its plain
state (vocabularies and statistics), the skorch nets and the critic network
by ``get_config``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.frozen import FrozenEstimator
from torch import nn
from torch.overrides import TorchFunctionMode

from sklearn_rmtl._container import (
    TYPE,
    TreeReader,
    TreeWriter,
    expect,
    fail,
)
from sklearn_rmtl._critic import (
    FITTED_ATTRIBUTES,
    FORMER_RMTL_PARAMETERS,
    Critic,
    FoldCritics,
    SessionCritic,
    critic_from_config,
    former_critic,
    set_fitted_critics,
)
from sklearn_rmtl._encoding import FeatureEncoder, embedding_layout
from sklearn_rmtl._fit_data import state_field_names
from sklearn_rmtl._mtl import MTLClassifier
from sklearn_rmtl._precision import PRECISIONS
from sklearn_rmtl._rmtl import RMTLClassifier
from sklearn_rmtl._seeding import isolated_global_rng
from sklearn_rmtl._skorch_net import MultiTaskNet, QWeightedNet, make_net
from sklearn_rmtl._torch_module import MultiTaskModule
from sklearn_rmtl._weighting import WEIGHTINGS
from sklearn_rmtl.backbones import BACKBONES, resolve_backbone_params

# Closed allow-lists: the only classes a file can make ``load`` construct.
ESTIMATORS: dict[str, type[MTLClassifier]] = {
    "MTLClassifier": MTLClassifier,
    "RMTLClassifier": RMTLClassifier,
}
_NETS: dict[str, type[MultiTaskNet]] = {
    "MultiTaskNet": MultiTaskNet,
    "QWeightedNet": QWeightedNet,
}

# Fitted attributes stored for each estimator (those its docstring documents,
# which a test checks), all required but those in ``_OPTIONAL``.
_MTL_FITTED = (
    "classes_",
    "n_tasks_",
    "task_names_",
    "n_features_in_",
    "feature_names_in_",
    "device_",
    "encoder_",
    "net_",
    "backbone_params_",
    "history_",
    "n_iter_",
)
_FITTED: dict[str, tuple[str, ...]] = {
    "MTLClassifier": _MTL_FITTED,
    "RMTLClassifier": (*_MTL_FITTED, "critic_", "refit_improved_", "label_weights_"),
    "SessionCritic": FITTED_ATTRIBUTES,
}
# Fitted attributes that earlier format versions stored under another name:
# {attribute: (its name in files before version N, N)}.
_RENAMED = {"net_": ("backbone_", 3)}
# From this format version on, a SessionCritic is stored with its parameters
# (the critic settings) and fitted attributes; before, it held fitted critics
# only, and RMTLClassifier had the settings (FORMER_RMTL_PARAMETERS).
_CRITIC_ESTIMATOR = 4
# Network arguments added after format version 2 was first written.
_NET_ADDED = frozenset({"precision", "module__sequences", "module__field_names"})
_BACKBONE_PARAMS_ADDED = frozenset(
    {
        "sequence_pooling",
        "attention_dims",
        "counterfactual",
        "counterfactual_weight",
        "min_propensity",
    }
)
_OPTIONAL = frozenset(
    {
        "feature_names_in_",  # set only with feature names
        "label_weights_",  # absent from files saved before it existed
    }
)
# Version 1 stored the encoder's fitted attributes, scikit-learn's encoders
# included; a frozen description of those files, read only to convert them.
_ENCODER_FITTED_V1 = (
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


class _SizedOnMeta(TorchFunctionMode):
    """Tensors created from a size go to the ``meta`` device (no memory).

    Tensors created from data (``torch.tensor``) stay where they are: their
    size is that of the data, and modules compute from them (embedding
    offsets). Building a module in this mode gives its weights' shapes.

    Parameters
    ----------
    max_tensors : int
        Sized tensors the module may create; one more raises
        :class:`_TooManyTensors`. Tensors on ``meta`` take no memory, but
        each module around them does: a count from a file (tasks, experts)
        must not make building even the empty network expensive.
    """

    def __init__(self, max_tensors: int) -> None:
        super().__init__()
        self.max_tensors = max_tensors

    _SIZED = frozenset(
        {
            torch.empty,
            torch.empty_strided,
            torch.zeros,
            torch.ones,
            torch.full,
            torch.rand,
            torch.randn,
            torch.randint,
            torch.arange,
            torch.eye,
        }
    )

    def __torch_function__(
        self, func: Any, types: Any, args: Any = (), kwargs: Any = None
    ) -> Any:
        kwargs = kwargs or {}
        if func in self._SIZED and kwargs.get("device") is None:
            kwargs["device"] = "meta"
            self.max_tensors -= 1
            if self.max_tensors < 0:
                raise _TooManyTensors
        return func(*args, **kwargs)


class _TooManyTensors(Exception):
    """A network being sized creates more tensors than its file declares."""


def _torch_dtype_str(dtype: torch.dtype) -> str:
    """NumPy's ``dtype.str`` of a torch dtype (e.g. ``"<f4"``)."""
    return torch.empty(0, dtype=dtype).numpy().dtype.str


_RESAVE = "re-save the model with sklearn_rmtl.persistence.save"
# Dtype kinds a schema entry accepts: "S" stands for strings, fixed-width or
# in an object array; labels are any scalars.
_KIND_NAMES = {"iu": "an integer", "f": "a float", "S": "a str", "L": "a label"}


def _check_array(
    value: Any,
    path: str,
    kinds: str,
    shape: tuple[int | None, ...],
    none: bool = False,
) -> Any:
    """``value`` if it is an array of ``kinds`` and ``shape`` (None: any size).

    A file can hold any dtype and shape the container accepts; what an entry
    must hold is the schema's to say, so that a wrong one fails at ``load``,
    not later in ``predict``.
    """
    if value is None and none:
        return value
    ok = (
        isinstance(value, np.ndarray)
        and value.ndim == len(shape)
        and all(n is None or n == m for n, m in zip(shape, value.shape, strict=True))
    )
    if ok and kinds == "S":
        ok = value.dtype.kind == "U" or (
            value.dtype.kind == "O" and all(isinstance(v, str) for v in value.flat)
        )
    elif ok and kinds == "L":
        ok = value.dtype.kind in "biufUO"
    elif ok:
        ok = value.dtype.kind in kinds
    if not ok:
        got = (
            f"{value.dtype} of shape {value.shape}"
            if isinstance(value, np.ndarray)
            else type(value).__name__
        )
        size = ", ".join("n" if n is None else str(n) for n in shape)
        raise fail(
            path,
            f"expected {_KIND_NAMES[kinds]} array of shape ({size}"
            f"{',' if len(shape) == 1 else ''}){' or None' if none else ''}, "
            f"got {got}; {_RESAVE}",
        )
    return value


def _check_type(value: Any, path: str, kind: type | tuple[type, ...]) -> Any:
    """``value`` if it is of the plain type ``kind`` (an int is no bool)."""
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise fail(
            path,
            f"expected {getattr(kind, '__name__', kind)}, got "
            f"{type(value).__name__}; {_RESAVE}",
        )
    return value


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------


class Writer(TreeWriter):
    """Turns an estimator into a JSON tree plus named arrays."""

    def state_dict(self, module: nn.Module, path: str) -> dict[str, str]:
        out = {}
        for key, tensor in module.state_dict().items():
            try:
                arr = tensor.detach().cpu().contiguous().numpy()
            except TypeError as exc:  # e.g. bfloat16 has no NumPy dtype
                raise TypeError(f"{path}/{key}: {exc}") from exc
            out[key] = self.add_array(arr, f"{path}/{key}")
        return out

    def estimator(self, est: MTLClassifier, path: str) -> dict[str, Any]:
        ref = self.seen(est, path)
        if ref is not None:
            return ref
        name = type(est).__name__
        if ESTIMATORS.get(name) is not type(est):
            raise TypeError(
                f"The safe format stores {sorted(ESTIMATORS)} only, not "
                f"{type(est).__module__}.{type(est).__qualname__}; use joblib "
                "for other estimators (and load such files only if you trust "
                "them)."
            )
        params = {}
        for key, val in est.get_params(deep=False).items():
            where = f"{path}/params/{key}"
            if isinstance(val, MTLClassifier):
                params[key] = self.estimator(val, where)
            elif isinstance(val, FrozenEstimator) and isinstance(
                val.estimator, MTLClassifier
            ):
                # A frozen actor: the wrapper, and the estimator at its own path.
                inner = self.estimator(val.estimator, f"{where}/estimator")
                params[key] = {TYPE: "FrozenEstimator", "estimator": inner}
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
                        "arrays), an MTLClassifier (frozen or not) or a "
                        "SessionCritic. Set a "
                        f"plain value first, e.g. est.set_params({key}=None) "
                        "(the fitted attributes are kept), or use joblib for "
                        "files you trust."
                    ) from exc
        fitted = None
        if est.__sklearn_is_fitted__():
            fitted = {}
            for attr in _FITTED[name]:
                where = f"{path}/{attr}"
                if attr not in vars(est):
                    if attr in _OPTIONAL:
                        continue
                    raise ValueError(
                        f"{where}: the fitted {name} has no attribute {attr!r}, "
                        "so it cannot be saved."
                    )
                fitted[attr] = self.fitted_value(vars(est)[attr], where)
        return {TYPE: "estimator", "class": name, "params": params, "fitted": fitted}

    def fitted_value(self, val: Any, path: str) -> Any:
        """A fitted attribute: a library object by its own schema, else plain."""
        if isinstance(val, FeatureEncoder):
            return self.encoder(val, path)
        if isinstance(val, MultiTaskNet):
            return self.net(val, path)
        if isinstance(val, SessionCritic):
            return self.session_critic(val, path)
        return self.value(val, path)

    def encoder(self, enc: FeatureEncoder, path: str) -> dict[str, Any]:
        ref = self.seen(enc, path)
        if ref is not None:
            return ref
        if type(enc) is not FeatureEncoder:
            raise TypeError(f"{path}: expected a FeatureEncoder, got {type(enc)}.")
        return {
            TYPE: "FeatureEncoder",
            "params": self.value(enc.get_params(deep=False), f"{path}/params"),
            "state": self.value(enc._get_state(), f"{path}/state"),
        }

    def net(self, net: MultiTaskNet, path: str) -> dict[str, Any]:
        name = type(net).__name__
        if _NETS.get(name) is not type(net) or net.module is not MultiTaskModule:
            raise TypeError(f"{path}: cannot store a {name} of {net.module!r}.")
        return {
            TYPE: "net",
            "class": name,
            "kwargs": self.value(net.get_config(), f"{path}/kwargs"),
            "state_dict": self.state_dict(net.module_, f"{path}/module_"),
        }

    def session_critic(self, critic: SessionCritic, path: str) -> dict[str, Any]:
        ref = self.seen(critic, path)
        if ref is not None:
            return ref
        if type(critic) is not SessionCritic:
            raise TypeError(f"{path}: expected a SessionCritic, got {type(critic)}.")
        fitted = None
        if critic.__sklearn_is_fitted__():
            if type(critic.module_) not in (Critic, FoldCritics):
                raise TypeError(
                    f"{path}/module_: expected a Critic or FoldCritics, got "
                    f"{type(critic.module_)}."
                )
            fitted = {
                "encoder_": self.encoder(critic.encoder_, f"{path}/encoder_"),
                "module_": {
                    "kwargs": self.value(
                        critic.module_.get_config(), f"{path}/module_/kwargs"
                    ),
                    "state_dict": self.state_dict(critic.module_, f"{path}/module_"),
                },
                "task_names_": self.value(critic.task_names_, f"{path}/task_names_"),
                "history_": self.value(critic.history_, f"{path}/history_"),
            }
        return {
            TYPE: "SessionCritic",
            "params": self.value(critic.get_params(), f"{path}/params"),
            "fitted": fitted,
        }


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------


class Reader(TreeReader):
    """Rebuilds estimators from a manifest tree of format ``version``.

    Parameters
    ----------
    zf, table
        See :class:`~sklearn_rmtl._container.TreeReader`.
    device : str
        Torch device of the rebuilt actor networks.
    version : int
        The file's format version: 1 stored the encoder as scikit-learn
        encoders' attributes, 2 as plain vocabularies and statistics.
    """

    def __init__(self, zf: Any, table: Any, device: str, version: int) -> None:
        super().__init__(zf, table)
        self.device = device
        self.version = version

    def _build(self, cls: Any, params: Any, path: str) -> Any:
        if not isinstance(params, dict):
            raise fail(path, "params must be an object")
        unknown = sorted(set(params) - set(cls._get_param_names()))
        if unknown:
            raise fail(path, f"{cls.__name__} has no parameters {unknown}")
        obj = cls(**params)
        try:
            obj._validate_params()
        except (TypeError, ValueError) as exc:
            raise fail(path, f"invalid {cls.__name__} parameters: {exc}") from exc
        return obj

    def state_dict(self, module: nn.Module, node: Any, path: str) -> None:
        """Load the arrays named by ``node`` into ``module`` (exact match)."""
        if not isinstance(node, dict):
            raise fail(path, "state_dict must be an object")
        expected = module.state_dict()
        unknown = sorted(set(node) - set(expected))
        missing = sorted(set(expected) - set(node))
        if unknown or missing:
            raise fail(
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
                raise fail(
                    f"{path}/{key}",
                    f"array of {arr.dtype} {arr.shape} does not fit the rebuilt "
                    f"network's {tensor.dtype} {tuple(tensor.shape)}",
                )
            state[key] = torch.from_numpy(np.array(arr))
        module.load_state_dict(state, strict=True)

    def check_size(self, make: Callable[[], nn.Module], node: Any, path: str) -> None:
        """Refuse a network larger than the weights ``node`` declares.

        ``make()`` is built without memory first, so that a file cannot make
        loading allocate a network larger than the file itself.
        """
        declared = self.declared_bytes(node.values()) if isinstance(node, dict) else 0
        # Networks create at most one sized tensor per state entry (a test
        # checks every backbone); the slack is for temporaries.
        entries = len(node) if isinstance(node, dict) else 0
        try:
            with _SizedOnMeta(max_tensors=2 * entries + 16):
                module = make()
        except _TooManyTensors:
            raise fail(
                path,
                f"the network has more tensors than the {entries} weights the "
                f"file declares: the network does not fit its weights; {_RESAVE}",
            ) from None
        except (TypeError, ValueError, RuntimeError) as exc:
            raise fail(path, f"the network cannot be rebuilt ({exc})") from exc
        needed = sum(t.numel() * t.element_size() for t in module.state_dict().values())
        if needed > declared:
            raise fail(
                path,
                f"the rebuilt network needs {needed} bytes of weights but the "
                f"file declares {declared}: the network does not fit its weights; "
                f"{_RESAVE}",
            )

    # -- estimators ----------------------------------------------------------
    def estimator(self, node: Any, path: str) -> MTLClassifier:
        ref = self.ref(node, path, MTLClassifier)
        if ref is not None:
            return ref
        node = self.tagged(node, "estimator", {"class", "params", "fitted"}, path)
        cls = ESTIMATORS.get(node["class"]) if isinstance(node["class"], str) else None
        if cls is None:
            raise fail(
                path,
                f"class {str(node['class'])[:80]!r} is not one of {sorted(ESTIMATORS)}",
            )
        raw = node["params"]
        if not isinstance(raw, dict):
            raise fail(path, "params must be an object")
        former = None
        if cls is RMTLClassifier and self.version < _CRITIC_ESTIMATOR:
            raw = dict(raw)
            settings = {
                new: self.value(raw.pop(old), f"{path}/params/{old}")
                for old, new in FORMER_RMTL_PARAMETERS.items()
                if old in raw
            }
            former = self._critic_settings(settings, f"{path}/params")
        params = {}
        for key, val in raw.items():
            where = f"{path}/params/{key}"
            tag = val.get(TYPE) if isinstance(val, dict) else None
            if tag == "ref":
                target = val.get("path")
                shared = self.objects.get(target) if isinstance(target, str) else None
                kind = MTLClassifier if isinstance(shared, MTLClassifier) else None
                params[key] = self.ref(val, where, kind or SessionCritic)
            elif tag == "estimator":
                params[key] = self.estimator(val, where)
            elif tag == "FrozenEstimator":
                val = expect(val, {TYPE, "estimator"}, where)
                inner = self.estimator(val["estimator"], f"{where}/estimator")
                params[key] = FrozenEstimator(inner)
            elif tag == "SessionCritic":
                params[key] = self.session_critic(val, where)
            else:
                params[key] = self.value(val, where)
        est = self._build(cls, params, path)
        self.objects[path] = est
        if node["fitted"] is not None:
            est.__dict__.update(self.fitted(node["fitted"], cls.__name__, path))
            self._check_estimator(est, path)
        if isinstance(est, RMTLClassifier) and former is not None:
            est.critic = former_critic(est.critic, vars(est).get("critic_"), former)
        return est

    def fitted(self, node: Any, name: str, path: str) -> dict[str, Any]:
        # Each attribute's key in this file's version.
        keys = {attr: self._stored_name(attr) for attr in _FITTED[name]}
        if not isinstance(node, dict):
            raise fail(path, "fitted attributes must be an object")
        unknown = sorted(set(node) - set(keys.values()))
        missing = sorted(
            key
            for attr, key in keys.items()
            if key not in node and attr not in _OPTIONAL
        )
        if unknown or missing:
            raise fail(path, f"unknown attributes {unknown}, missing {missing}")
        readers: dict[str, Callable[[Any, str], Any]] = {
            "encoder_": self.encoder,
            "net_": self.net,
            "critic_": self.session_critic,
        }
        out = {}
        for attr, key in keys.items():
            if key not in node:
                continue
            where = f"{path}/{key}"
            if attr in readers and node[key] is not None:
                out[attr] = readers[attr](node[key], where)
            else:
                out[attr] = self.value(node[key], where)
        self._check_fitted(out, path)
        return out

    def _stored_name(self, attr: str) -> str:
        """The key of fitted attribute ``attr`` in a file of this version."""
        former, since = _RENAMED.get(attr, (attr, 0))
        return attr if self.version >= since else former

    def _check_fitted(self, fitted: dict[str, Any], path: str) -> None:
        """The plain fitted attributes have the types and shapes documented."""
        for attr in ("n_tasks_", "n_features_in_", "n_iter_"):
            _check_type(fitted[attr], f"{path}/{attr}", int)
        _check_type(fitted["device_"], f"{path}/device_", str)
        n_tasks = fitted["n_tasks_"]
        _check_array(fitted["classes_"], f"{path}/classes_", "L", (n_tasks, 2))
        _check_array(fitted["task_names_"], f"{path}/task_names_", "S", (n_tasks,))
        if "feature_names_in_" in fitted:
            n_features = fitted["n_features_in_"]
            where = f"{path}/feature_names_in_"
            _check_array(fitted["feature_names_in_"], where, "S", (n_features,))
        if "refit_improved_" in fitted:
            _check_type(fitted["refit_improved_"], f"{path}/refit_improved_", bool)
        if "label_weights_" in fitted:
            where = f"{path}/label_weights_"
            _check_array(fitted["label_weights_"], where, "f", (n_tasks, 2), True)

    def _check_estimator(self, est: MTLClassifier, path: str) -> None:
        net = est.net_
        encoder = est.encoder_
        if (
            not isinstance(net, MultiTaskNet)
            or not isinstance(encoder, FeatureEncoder)
            or list(net.module__cardinalities) != embedding_layout(encoder)[0]
            or [tuple(s) for s in getattr(net, "module__sequences", [])]
            != embedding_layout(encoder)[1]
            or net.module__n_tasks != est.n_tasks_
            or getattr(net, "module__field_names", None)
            not in (None, state_field_names(encoder))
        ):
            raise fail(path, "the encoder, network and tasks do not fit together")

    # -- the feature encoder -------------------------------------------------
    def encoder(self, node: Any, path: str) -> FeatureEncoder:
        ref = self.ref(node, path, FeatureEncoder)
        if ref is not None:
            return ref
        if self.version == 1:
            node = self.tagged(node, "FeatureEncoder", {"params", "fitted"}, path)
            state = self._encoder_state_v1(node["fitted"], path)
        else:
            node = self.tagged(node, "FeatureEncoder", {"params", "state"}, path)
            state = self.value(node["state"], f"{path}/state")
        params = self.value(node["params"], f"{path}/params")
        enc = self._build(FeatureEncoder, params, path)
        try:
            enc._set_state(state)
        except (ValueError, TypeError, KeyError) as exc:
            raise fail(f"{path}/state", f"invalid encoder state: {exc}") from exc
        self.objects[path] = enc
        return enc

    def _encoder_state_v1(self, node: Any, path: str) -> dict[str, Any]:
        """The plain state of a version-1 encoder node.

        Version 1 stored the fitted ``OrdinalEncoder`` and ``StandardScaler``
        attributes; only the vocabularies, their infrequent mapping and the
        scaling statistics are read from them (all values are decoded, so
        every array is still checked).
        """
        if not isinstance(node, dict):
            raise fail(path, "fitted attributes must be an object")
        unknown = sorted(set(node) - set(_ENCODER_FITTED_V1))
        missing = sorted(set(_ENCODER_FITTED_V1) - set(node) - {"feature_names_in_"})
        if unknown or missing:
            raise fail(path, f"unknown attributes {unknown}, missing {missing}")
        fit = {
            k: self.value(v, f"{path}/{k}")
            for k, v in node.items()
            if k not in ("ordinal_encoder_", "scaler_")
        }
        ordinal = self._sklearn_v1(node["ordinal_encoder_"], "OrdinalEncoder", path)
        scaler = self._sklearn_v1(node["scaler_"], "StandardScaler", path)
        self._check_encoder_v1(fit, ordinal, scaler, path)
        try:
            cat_idx, num_idx = fit["_cat_idx"].tolist(), fit["_num_idx"].tolist()
            indicators = set(fit["_indicator_idx"].tolist())
            categorical = []
            if cat_idx:
                if ordinal is None:
                    raise ValueError("categorical columns without ordinal_encoder_")
                mappings = ordinal.get("_default_to_infrequent_mappings")
                if not ordinal.get("_infrequent_enabled") or mappings is None:
                    mappings = [None] * len(cat_idx)
                for j, name, cats, mapping in zip(
                    cat_idx,
                    fit["categorical_features_"],
                    ordinal["categories_"],
                    mappings,
                    strict=True,
                ):
                    known = cats[~pd.isna(cats)]
                    positions = np.arange(len(known)) if mapping is None else mapping
                    if len(positions) != len(known):
                        raise ValueError("infrequent mapping of the wrong size")
                    codes = np.asarray(positions, dtype=np.int64) + 2
                    categorical.append(
                        {
                            "position": j,
                            "name": name,
                            "values": known.tolist(),
                            "codes": codes.tolist(),
                        }
                    )
            numerical = []
            if num_idx:
                if scaler is None:
                    raise ValueError("numerical columns without scaler_")
                for i, (j, name) in enumerate(
                    zip(num_idx, fit["numerical_features_"], strict=True)
                ):
                    numerical.append(
                        {
                            "position": j,
                            "name": name,
                            "mean": float(scaler["mean_"][i]),
                            "scale": float(scaler["scale_"][i]),
                            "missing_indicator": i in indicators,
                        }
                    )
        except (AttributeError, KeyError, IndexError) as exc:
            raise fail(path, f"invalid version-1 encoder ({exc!r})") from exc
        except (TypeError, ValueError) as exc:
            raise fail(path, f"invalid version-1 encoder ({exc})") from exc
        state = {
            "n_features_in": fit["n_features_in_"],
            "feature_names_in": fit.get("feature_names_in_"),
            "categorical": categorical,
            "numerical": numerical,
        }
        cards = fit["cardinalities_"]
        if not isinstance(cards, np.ndarray) or cards.tolist() != [
            max(max(c["codes"], default=0) + 1, 2) for c in categorical
        ]:
            raise fail(path, "cardinalities_ do not match the vocabularies")
        return state

    def _check_encoder_v1(
        self,
        fit: dict[str, Any],
        ordinal: dict[str, Any] | None,
        scaler: dict[str, Any] | None,
        path: str,
    ) -> None:
        """The arrays of a version-1 encoder have the dtypes and shapes it wrote."""
        for attr in ("_cat_idx", "_num_idx", "_indicator_idx", "cardinalities_"):
            _check_array(fit[attr], f"{path}/{attr}", "iu", (None,))
        for attr in ("categorical_features_", "numerical_features_"):
            _check_array(fit[attr], f"{path}/{attr}", "L", (None,))
        if fit.get("feature_names_in_") is not None:
            where = f"{path}/feature_names_in_"
            _check_array(fit["feature_names_in_"], where, "S", (None,))
        if ordinal is not None:
            where = f"{path}/ordinal_encoder_/fitted"
            for attr in ("_infrequent_indices", "_default_to_infrequent_mappings"):
                for i, arr in enumerate(ordinal.get(attr) or ()):
                    _check_array(arr, f"{where}/{attr}/{i}", "iu", (None,), True)
        if scaler is not None:
            n_numerical = len(fit["_num_idx"])
            for attr in ("mean_", "var_", "scale_"):
                where = f"{path}/scaler_/fitted/{attr}"
                _check_array(scaler.get(attr), where, "f", (n_numerical,))

    def _sklearn_v1(self, node: Any, tag: str, path: str) -> dict[str, Any] | None:
        """The decoded fitted attributes of a version-1 scikit-learn node."""
        if node is None:
            return None
        node = self.tagged(node, tag, {"params", "fitted"}, path)
        self.value(node["params"], f"{path}/params")
        fitted = self.value(node["fitted"], f"{path}/fitted")
        if not isinstance(fitted, dict):
            raise fail(path, "fitted attributes must be an object")
        return fitted

    # -- networks ------------------------------------------------------------
    def net(self, node: Any, path: str) -> MultiTaskNet:
        node = self.tagged(node, "net", {"class", "kwargs", "state_dict"}, path)
        name = node["class"]
        net_cls = _NETS.get(name) if isinstance(name, str) else None
        if net_cls is None:
            raise fail(path, f"network class {str(name)[:80]!r} is not allowed")
        kwargs = self.value(node["kwargs"], f"{path}/kwargs")
        if not isinstance(kwargs, dict):
            raise fail(path, "network arguments must be an object")
        try:
            net = make_net(net_cls, device=self.device, **kwargs)
            # The net names the arguments it is configured by.
            keys = set(net.get_config())
        except (TypeError, ValueError, AttributeError) as exc:
            raise fail(path, f"invalid network arguments ({exc})") from exc
        # Files written before an argument existed lack it: its default holds.
        if not set(kwargs) <= keys or keys - set(kwargs) - _NET_ADDED:
            raise fail(
                path, f"network arguments must be {sorted(keys)}, got {sorted(kwargs)}"
            )
        precision = kwargs.get("precision", "float32")
        if not isinstance(precision, str) or precision not in PRECISIONS:
            raise fail(path, f"unknown precision {str(precision)[:80]!r}")
        backbone = kwargs.get("module__backbone")
        if backbone not in BACKBONES:
            raise fail(path, f"unknown backbone {str(backbone)[:80]!r}")
        params = kwargs.get("module__backbone_params")
        try:
            # Files written before a key existed lack it: its default holds.
            valid = (
                isinstance(params, dict)
                and set(params)
                <= set(resolve_backbone_params(backbone, params))
                <= set(params) | _BACKBONE_PARAMS_ADDED
            )
        except (AttributeError, TypeError, ValueError):
            valid = False
        if not valid:
            raise fail(path, f"invalid backbone_params {str(params)[:200]}")
        if net_cls is QWeightedNet and kwargs["weighting"] not in WEIGHTINGS:
            raise fail(path, f"unknown weighting {kwargs['weighting']!r}")
        where = f"{path}/module_"
        module_kwargs = {
            k.removeprefix("module__"): v
            for k, v in kwargs.items()
            if k.startswith("module__")
        }
        self.check_size(
            lambda: MultiTaskModule(**module_kwargs), node["state_dict"], where
        )
        try:
            with isolated_global_rng(self.device):  # leaves the caller's RNG alone
                net.initialize()
        except (TypeError, ValueError, RuntimeError) as exc:
            raise fail(path, f"the network cannot be rebuilt ({exc})") from exc
        self.state_dict(net.module_, node["state_dict"], where)
        net.trim_for_prediction()
        return net

    def session_critic(self, node: Any, path: str) -> SessionCritic:
        ref = self.ref(node, path, SessionCritic)
        if ref is not None:
            return ref
        if self.version < _CRITIC_ESTIMATOR:
            # Fitted critics without settings, under names without "_".
            node = self.tagged(
                node,
                "SessionCritic",
                {"encoder", "module", "task_names", "history"},
                path,
            )
            critic = SessionCritic()
            fitted = {f"{k}_": v for k, v in node.items() if k != TYPE}
        else:
            node = self.tagged(node, "SessionCritic", {"params", "fitted"}, path)
            params = self.value(node["params"], f"{path}/params")
            critic = self._critic_settings(params, path)
            fitted = node["fitted"]
            if fitted is not None:
                fitted = expect(fitted, set(FITTED_ATTRIBUTES), f"{path}/fitted")
        if fitted is not None:
            self._fitted_critics(critic, fitted, path)
        self.objects[path] = critic
        return critic

    def _critic_settings(self, params: Any, path: str) -> SessionCritic:
        """An unfitted SessionCritic of ``params``, checked as ``fit`` does."""
        critic = self._build(SessionCritic, params, path)
        try:
            critic._check_params()
        except ValueError as exc:
            raise fail(path, f"invalid SessionCritic parameters: {exc}") from exc
        return critic

    def _fitted_critics(
        self, critic: SessionCritic, node: dict[str, Any], path: str
    ) -> None:
        """Rebuild and set ``critic``'s fitted attributes from ``node``.

        ``node`` has the keys :data:`~sklearn_rmtl._critic.FITTED_ATTRIBUTES`;
        each is at ``path`` under its name in this file's version (where
        references to it point).
        """
        old = self.version < _CRITIC_ESTIMATOR

        def where(attr: str) -> str:
            return f"{path}/{attr.removesuffix('_') if old else attr}"

        encoder = self.encoder(node["encoder_"], where("encoder_"))
        module_node = expect(node["module_"], {"kwargs", "state_dict"}, path)
        # Version 3 and before named the arguments after the critic's path.
        kwargs_path = f"{path}/kwargs" if old else f"{where('module_')}/kwargs"
        kwargs = self.value(module_node["kwargs"], kwargs_path)
        if not isinstance(kwargs, dict):
            raise fail(path, "critic arguments must be an object")
        # Files written before the critics had an output choice used -ReLU.
        kwargs = {"output": "relu", **kwargs}
        n_folds = kwargs.get("n_folds")
        if "n_folds" in kwargs and not (
            isinstance(n_folds, int) and not isinstance(n_folds, bool) and n_folds >= 2
        ):
            raise fail(path, f"n_folds must be an integer >= 2, got {n_folds!r}")

        def make() -> Critic | FoldCritics:
            return critic_from_config(kwargs)

        module_path = where("module_")
        self.check_size(make, module_node["state_dict"], module_path)
        try:
            with isolated_global_rng("cpu"):
                module = make()
        except (TypeError, ValueError, RuntimeError) as exc:
            raise fail(path, f"the critic cannot be rebuilt ({exc})") from exc
        # Files written before sequence columns have no "sequences".
        if module.get_config() != {"sequences": [], **kwargs}:
            raise fail(path, f"critic arguments must be {sorted(module.get_config())}")
        self.state_dict(module, module_node["state_dict"], module_path)
        task_names = self.value(node["task_names_"], where("task_names_"))
        history = self.value(node["history_"], where("history_"))
        _check_array(task_names, where("task_names_"), "S", (None,))
        if not isinstance(history, list):
            raise fail(path, "history must be a list")
        set_fitted_critics(
            critic,
            encoder=encoder,
            module=module.eval(),
            task_names=task_names,
            history=history,
        )
