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
by hand before anything is loaded. It has two layers: a generic hardened
container of plain values and arrays (``sklearn_rmtl._container``) and a
schema saying what each class is stored as (``sklearn_rmtl._schema``).
Format version 2 stores the feature encoder as plain vocabularies and
statistics; version 3 names the fitted network ``net_`` (``backbone_``
before); version 4 stores a :class:`~sklearn_rmtl.SessionCritic` with its
parameters (the critic settings, before RMTLClassifier's own parameters)
and its fitted attributes. Files of versions 1 to 3 still load: their
critic settings become the ``critic`` parameter (``None`` where they are
the defaults) and the settings of the critics the estimator trained.
"""

from __future__ import annotations

import os
import struct
import warnings
import zipfile
from typing import IO, Any

import numpy as np
import sklearn
import torch
from sklearn.utils.validation import check_is_fitted

from sklearn_rmtl import _version
from sklearn_rmtl._container import (
    MANIFEST,
    check_members,
    fail,
    read_manifest,
    write_zip,
)
from sklearn_rmtl._critic import SessionCritic
from sklearn_rmtl._encoding import ENCODER_STATE_TYPES, FeatureEncoder
from sklearn_rmtl._mtl import MTLClassifier
from sklearn_rmtl._schema import ESTIMATORS, Reader, Writer
from sklearn_rmtl._skorch_net import MultiTaskNet, QWeightedNet
from sklearn_rmtl._validation import resolve_device
from sklearn_rmtl.exceptions import InconsistentVersionWarning, InvalidFileError

__all__ = [
    "InconsistentVersionWarning",
    "InvalidFileError",
    "load",
    "save",
    "skops_trusted_types",
]

#: Value of ``manifest["format"]``; anything else is not one of these files.
FORMAT_NAME = "sklearn-rmtl-safe"
#: Layout version written by :func:`save`.
FORMAT_VERSION = 4
#: Layout versions :func:`load` reads: 1 stored the feature encoder as
#: scikit-learn encoders' attributes, 2 as plain vocabularies and statistics;
#: 3 names the fitted network ``net_`` (1 and 2: ``backbone_``); 4 stores a
#: SessionCritic's parameters (1 to 3: RMTLClassifier's critic settings).
READABLE_VERSIONS = (1, 2, 3, 4)
_MANIFEST_KEYS = frozenset(
    {
        "format",
        "format_version",
        "sklearn_rmtl_version",
        "environment",
        "arrays",
        "estimator",
    }
)


def skops_trusted_types() -> list[str]:
    """The classes to trust when loading a skops file of a fitted estimator.

    A fitted :class:`~sklearn_rmtl.MTLClassifier` or
    :class:`~sklearn_rmtl.RMTLClassifier` pickles as plain values, NumPy
    arrays and this library's own classes only (its networks as their
    configuration and weights), so a file of ``skops.io.dump`` or of
    MLflow's default scikit-learn format (skops, from MLflow 3) loads once
    these classes are trusted, and nothing else.

    Returns
    -------
    types : list of str
        Full names of the estimators, :class:`~sklearn_rmtl.SessionCritic`,
        the skorch nets, the feature encoder and its state's named tuples,
        as ``skops.io.get_untrusted_types`` names them.

    See Also
    --------
    save : This library's own safe format, which needs no trust list.

    Notes
    -----
    A parameter that is not a plain value (a skorch callback, a
    ``RandomState``) adds its own type to a file: check
    ``skops.io.get_untrusted_types`` before trusting more.

    Examples
    --------
    >>> from sklearn_rmtl.persistence import skops_trusted_types
    >>> "sklearn_rmtl._mtl.MTLClassifier" in skops_trusted_types()
    True
    """
    classes = (
        *ESTIMATORS.values(),
        SessionCritic,
        MultiTaskNet,
        QWeightedNet,
        FeatureEncoder,
        *ENCODER_STATE_TYPES,
    )
    return sorted(f"{cls.__module__}.{cls.__qualname__}" for cls in classes)


def _library_version() -> str:
    # Read at call time (tests patch it).
    return _version.__version__


def save(estimator: MTLClassifier, path: str | os.PathLike[str] | IO[bytes]) -> None:
    """Save a fitted estimator in the safe format (JSON and arrays, no pickle).

    Writes one zip file: ``manifest.json`` (format and library versions, the
    class, the constructor parameters, the fitted attributes, the encoders'
    vocabularies and scaling statistics as JSON) and one ``.npy`` file per
    array (network weights, label arrays). Read it back with :func:`load`.

    Parameters
    ----------
    estimator : MTLClassifier or RMTLClassifier
        A fitted estimator of exactly one of these classes (not a subclass).
        Its constructor parameters must be plain values (None, bool, int,
        float, str, lists, tuples, dicts, NumPy arrays), or for
        :class:`~sklearn_rmtl.RMTLClassifier` an ``MTLClassifier`` as
        ``actor`` and a fitted or unfitted
        :class:`~sklearn_rmtl.SessionCritic` as ``critic``, which are
        stored with it.
    path : str, path-like or binary file object
        Where to write; an existing file is replaced atomically (the file is
        written to a temporary file in the same folder first, so a failure
        such as a full disk leaves it as it was). A file object is written
        in place. Any name works; the content is a zip archive.

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
            f"save stores {sorted(ESTIMATORS)}, got {type(estimator).__name__}."
        )
    check_is_fitted(
        estimator,
        msg=(
            f"This {type(estimator).__name__} is not fitted yet; the safe format "
            "stores fitted models only. Call fit before save (an unfitted "
            "configuration is just get_params(), or use joblib)."
        ),
    )
    writer = Writer()
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
        "estimator": root,
    }
    write_zip(path, manifest, writer.arrays)


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
        Torch device of the loaded network: "cpu" or a CUDA device this
        machine has ("cuda", "cuda:1"...).
        The estimator's ``device`` parameter (and a given ``actor``'s) is set
        to it, so that ``fit`` on the loaded estimator or its clone trains
        there: a model trained on a GPU loads and refits on a CPU. The
        critics of an :class:`~sklearn_rmtl.RMTLClassifier` stay on the CPU,
        where :meth:`~sklearn_rmtl.RMTLClassifier.loss_weights` uses them.

    Returns
    -------
    estimator : MTLClassifier or RMTLClassifier
        The fitted estimator, ready for ``predict_proba``; its constructor
        parameters are the saved ones but ``device``, so ``clone`` and
        ``get_params`` work.

    Raises
    ------
    InvalidFileError
        If the file is not a zip written by :func:`save`, or has been
        tampered with: missing or malformed manifest, wrong format name or
        version, a class outside the allow-list, missing, extra or
        non-numeric arrays, an inconsistent encoder state, or weights that do
        not fit the rebuilt networks. The message names the manifest entry.
        Files of a format version this release does not read name the fix:
        load them with the release that wrote them and save them again.

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
    Loading cannot run code chosen by the file's author, and its memory is
    bounded by the file's size: arrays are stored uncompressed and must be
    backed by bytes of the file, and each network is sized without memory
    before it is built and refused if it is larger than the weights the file
    holds (the deflated manifest is read up to 1 GiB, and at most 100 times
    its compressed size). Every member is read through a bounded stream,
    never past the size it declares; encrypted members, other compression
    methods, bad CRCs and truncated members are an :class:`InvalidFileError`
    naming the member. Prefer joblib for your
    own files (faster, stores any estimator); prefer this format whenever a
    file crosses a trust boundary.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np, pandas as pd
    >>> from sklearn_rmtl import RMTLClassifier, SessionCritic
    >>> from sklearn_rmtl.persistence import load, save
    >>> rng = np.random.default_rng(0)
    >>> X = pd.DataFrame({"item": rng.choice(["a", "b", "c"], 200),
    ...                   "price": rng.normal(size=200)})
    >>> Y = rng.integers(0, 2, size=(200, 2))
    >>> small = {"embedding_dim": 4, "bottom_dims": (8,), "tower_dims": (4,)}
    >>> clf = RMTLClassifier(backbone="sharedbottom", backbone_params=small,
    ...                      critic=SessionCritic(hidden_dims=(8,), max_epochs=2),
    ...                      max_epochs=2, random_state=0)
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
    placement, device = device, resolve_device(device)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, EOFError, ValueError, struct.error) as exc:
        # ValueError and struct.error: central directories that zipfile
        # parses without checking (negative offsets, cut-short records).
        raise InvalidFileError(
            f"{path!r} is not a sklearn_rmtl safe file: not a zip archive "
            f"({exc}). Files from joblib or pickle load with joblib.load, and "
            "only when you trust them."
        ) from exc
    with zf:
        check_members(zf)
        manifest = _check_manifest(read_manifest(zf))
        _check_versions(manifest)
        reader = Reader(zf, manifest["arrays"], device, manifest["format_version"])
        try:
            estimator = reader.estimator(manifest["estimator"], "estimator")
        except RecursionError as exc:
            raise fail("estimator", "the manifest is nested too deeply") from exc
        if not estimator.__sklearn_is_fitted__():
            raise fail("estimator", "the file holds no fitted estimator")
        reader.check_all_used()
    # The network is on ``device`` now, and so is any later fit of this
    # estimator or its clone: a model trained on a GPU refits on the CPU.
    params = estimator.get_params()
    estimator.set_params(
        **{k: placement for k in params if k == "device" or k.endswith("__device")}
    )
    return estimator


def _check_manifest(manifest: Any) -> dict[str, Any]:
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise InvalidFileError(
            f"Not a sklearn_rmtl safe file: format is {str(found)[:80]!r}, "
            f"expected {FORMAT_NAME!r}."
        )
    version = manifest.get("format_version")
    if type(version) is not int or version not in READABLE_VERSIONS:
        raise InvalidFileError(
            f"The file uses version {str(version)[:20]} of the sklearn_rmtl safe "
            f"format; this sklearn_rmtl ({_library_version()}) reads versions "
            f"{list(READABLE_VERSIONS)}. Load it with the sklearn_rmtl version "
            "that wrote it (its manifest.json names it), and save it again "
            "with this one if you need it here."
        )
    if set(manifest) != _MANIFEST_KEYS:
        raise fail(
            MANIFEST,
            f"expected the keys {sorted(_MANIFEST_KEYS)}, got {sorted(manifest)}",
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
