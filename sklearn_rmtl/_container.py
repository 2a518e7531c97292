"""A hardened container: one zip of a JSON manifest and ``.npy`` arrays.

Knows nothing of estimators (that is :mod:`sklearn_rmtl._schema`). It turns
a tree of plain values (None, bool, int, float, str, lists, tuples, dicts,
NumPy scalars and arrays) into JSON plus named arrays and back, and reads a
zip without trusting it: the manifest and every array are size-checked
before they are decompressed, arrays are read with ``allow_pickle=False``
and must match the dtype and shape the manifest declares, every member of
the zip must be declared and every declared array used, and nothing in the
file can name a class or a function. Members are read through a bounded
stream (never more than their declared size, itself bounded by the file's),
so a central directory that lies about sizes cannot make ``load``
decompress more than it declares.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import secrets
import stat
import zipfile
import zlib
from collections import Counter
from typing import IO, Any

import numpy as np

from sklearn_rmtl.exceptions import InvalidFileError

MANIFEST = "manifest.json"
NPY = ".npy"
#: Key of the tag that marks a JSON object as a typed value.
TYPE = "__type__"
# Bounds what a hostile zip can make ``load`` decompress before any check.
_MAX_MANIFEST_BYTES = 1 << 30
# A saved manifest deflates by about 5x (JSON of names and numbers); a
# member declaring more than this ratio is a zip bomb, refused unread.
_MAX_DEFLATE_RATIO = 100
# Bytes decompressed per read: what one step of a member's stream may take.
_CHUNK = 1 << 20
# General-purpose bits of encrypted members (traditional and strong).
_ENCRYPTED_FLAGS = 0x1 | 0x40
_RESAVE = "re-save the model with sklearn_rmtl.persistence.save"
# Room for an ``.npy`` header in front of an array's data.
_MAX_NPY_HEADER = 1 << 16
# Array dtypes stored as ``.npy``: booleans, integers, floats, fixed strings.
NPY_KINDS = frozenset("biufU")
# A fixed zip timestamp: the same content always gives the same bytes.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def fail(path: str, message: str) -> InvalidFileError:
    """The error for a file that is malformed at manifest entry ``path``."""
    return InvalidFileError(f"Invalid sklearn_rmtl safe file at {path}: {message}")


def expect(node: Any, keys: set[str], path: str) -> dict[str, Any]:
    """``node`` as a JSON object with exactly the keys ``keys``."""
    if not isinstance(node, dict) or set(node) != keys:
        found = sorted(node) if isinstance(node, dict) else type(node).__name__
        raise fail(path, f"expected an object with keys {sorted(keys)}, got {found}")
    return node


def non_negative_int(node: Any, path: str) -> int:
    """``node`` as a JSON integer >= 0 (not a bool)."""
    if type(node) is not int or node < 0:
        raise fail(path, f"expected a non-negative integer, got {node!r}")
    return node


def parse_dtype(text: Any, path: str, kinds: frozenset[str] = NPY_KINDS) -> np.dtype:
    """A NumPy dtype of one of ``kinds`` from its ``dtype.str``."""
    try:
        dtype = np.dtype(text) if isinstance(text, str) else None
    except (TypeError, ValueError, SyntaxError):
        dtype = None
    if dtype is None or dtype.kind not in kinds or dtype.hasobject:
        raise fail(path, f"unsupported dtype {text!r}")
    return dtype


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------


class TreeWriter:
    """Turns plain values into a JSON tree plus named arrays."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        # Objects shared between places (the critic's encoder is the actor's)
        # are written once and referenced by path, as pickle would.
        self._memo: dict[int, str] = {}
        self._alive: list[Any] = []

    def seen(self, obj: Any, path: str) -> dict[str, Any] | None:
        """A reference to ``obj`` if written before; else remember ``path``."""
        if id(obj) in self._memo:
            return {TYPE: "ref", "path": self._memo[id(obj)]}
        self._memo[id(obj)] = path
        self._alive.append(obj)  # ids stay unique while we write
        return None

    def add_array(self, arr: np.ndarray, path: str) -> str:
        """Store ``arr`` as an ``.npy`` member; returns its unique name."""
        name = re.sub(r"[^A-Za-z0-9_./-]", "_", path)
        base, i = name, 1
        while name in self.arrays:
            i += 1
            name = f"{base}~{i}"
        self.arrays[name] = arr
        return name

    def scalar(self, obj: Any, path: str) -> Any:
        """None, a bool, a number or a str (Python or NumPy)."""
        if isinstance(obj, np.generic):
            if obj.dtype.kind not in NPY_KINDS:
                raise TypeError(f"{path}: cannot store a {obj.dtype} scalar.")
            value = self.scalar(obj.item(), path)
            return {TYPE: "scalar", "dtype": obj.dtype.str, "value": value}
        if obj is None or isinstance(obj, bool | int | str):
            return obj
        if isinstance(obj, float):
            if math.isfinite(obj):
                return obj
            return {TYPE: "float", "value": repr(obj)}
        raise TypeError(f"{path}: cannot store an object of type {type(obj).__name__}.")

    def array(self, arr: np.ndarray, path: str) -> dict[str, Any]:
        """A NumPy array: an ``.npy`` member, or JSON items for object arrays."""
        if arr.dtype.kind in NPY_KINDS:
            return {TYPE: "ndarray", "name": self.add_array(arr, path)}
        if arr.dtype.kind == "O":
            # Categories and names: JSON values, never pickled objects.
            items = [self.scalar(v, f"{path}[{i}]") for i, v in enumerate(arr.flat)]
            return {TYPE: "object_array", "shape": list(arr.shape), "items": items}
        raise TypeError(f"{path}: cannot store an array of dtype {arr.dtype}.")

    def value(self, obj: Any, path: str) -> Any:
        """Any plain value, nested."""
        if isinstance(obj, np.ndarray):
            return self.array(obj, path)
        if isinstance(obj, list):
            return [self.value(v, f"{path}/{i}") for i, v in enumerate(obj)]
        if isinstance(obj, tuple):
            items = [self.value(v, f"{path}/{i}") for i, v in enumerate(obj)]
            return {TYPE: "tuple", "items": items}
        if isinstance(obj, dict):
            if all(type(k) is str for k in obj) and TYPE not in obj:
                return {k: self.value(v, f"{path}/{k}") for k, v in obj.items()}
            pairs = [
                [self.scalar(k, path), self.value(v, f"{path}/{i}")]
                for i, (k, v) in enumerate(obj.items())
            ]
            return {TYPE: "dict", "items": pairs}
        return self.scalar(obj, path)


def write_zip(
    path: str | os.PathLike[str] | IO[bytes],
    manifest: dict[str, Any],
    arrays: dict[str, np.ndarray],
) -> None:
    """Write ``manifest`` (with its ``arrays`` table added) and the arrays.

    A path is written atomically: to a temporary file in the same folder,
    moved over ``path`` only once complete, so that a failure (a full disk)
    leaves a previous file at ``path`` intact and no temporary file behind.
    A file object is written in place.
    """
    if not isinstance(path, str | os.PathLike):
        _write_zip(path, manifest, arrays)
        return
    # Through a symbolic link, the file it points to is the one replaced.
    target = os.path.realpath(path)
    folder, name = os.path.split(target)
    fd, tmp = _create_temporary(folder, name)
    try:
        with os.fdopen(fd, "wb") as f:
            _write_zip(f, manifest, arrays)
            f.flush()
            os.fsync(f.fileno())
        if os.path.exists(target):
            os.chmod(tmp, stat.S_IMODE(os.stat(target).st_mode))
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _create_temporary(folder: str, name: str) -> tuple[int, str]:
    """A new file next to ``name``, created with the default permissions.

    Unlike :func:`tempfile.mkstemp` (always 0o600), the umask applies, as it
    does to a file that ``open(path, "wb")`` creates.
    """
    while True:
        tmp = os.path.join(folder, f".{name}.{secrets.token_hex(4)}.tmp")
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue


def _write_zip(
    path: IO[bytes], manifest: dict[str, Any], arrays: dict[str, np.ndarray]
) -> None:
    manifest = {
        **manifest,
        "arrays": {
            name: {"dtype": arr.dtype.str, "shape": list(arr.shape)}
            for name, arr in arrays.items()
        },
    }
    text = json.dumps(manifest, indent=1, allow_nan=False)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(_zip_info(MANIFEST, zipfile.ZIP_DEFLATED), text)
        # Trained float weights shrink by a few percent at most when deflated,
        # at ~20x the time of writing them: arrays are stored as they are.
        for name, arr in arrays.items():
            with zf.open(_zip_info(name + NPY, zipfile.ZIP_STORED), "w") as f:
                np.lib.format.write_array(f, arr, allow_pickle=False)


def _zip_info(name: str, compression: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    info.compress_type = compression
    return info


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------


def _archive_size(zf: zipfile.ZipFile) -> int:
    fp = zf.fp
    if fp is None:
        raise ValueError("the archive is closed")
    position = fp.tell()
    size = fp.seek(0, io.SEEK_END)
    fp.seek(position)
    return size


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; the writer tags non-finite floats instead.
    raise ValueError(f"{name} is not valid JSON")


def check_members(zf: zipfile.ZipFile) -> None:
    """Refuse a zip whose members ``load`` would not read safely.

    Checked from the central directory, before any member is opened: names
    are unique, nothing is encrypted, the manifest is stored or deflated and
    every other member stored, and no member claims more bytes than the file
    holds or (for the deflated manifest) more than a plausible ratio of them.

    Raises
    ------
    InvalidFileError
        Naming the member and what ``save`` writes instead.
    """
    size = _archive_size(zf)
    counts = Counter(info.filename for info in zf.infolist())
    duplicated = sorted(name for name, n in counts.items() if n > 1)
    if duplicated:
        raise fail("archive", f"members {duplicated} appear more than once; {_RESAVE}")
    for info in zf.infolist():
        name = info.filename
        if info.flag_bits & _ENCRYPTED_FLAGS:
            raise fail(name, f"the member is encrypted; {_RESAVE} (it never encrypts)")
        allowed = (
            (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
            if name == MANIFEST
            else (zipfile.ZIP_STORED,)
        )
        if info.compress_type not in allowed:
            what = "a deflated manifest" if name == MANIFEST else "arrays uncompressed"
            raise fail(
                name,
                f"the member is compressed with method {info.compress_type}, but "
                f"save writes {what}; {_RESAVE}",
            )
        if info.compress_size > size:
            raise fail(
                name,
                f"the member declares {info.compress_size} bytes in a file of "
                f"{size}: it is truncated or its sizes are wrong; {_RESAVE}",
            )
        if info.compress_type == zipfile.ZIP_STORED and (
            info.file_size != info.compress_size
        ):
            raise fail(
                name,
                f"the stored member declares {info.file_size} bytes but holds "
                f"{info.compress_size}: its sizes are wrong; {_RESAVE}",
            )
        if info.file_size > max(_CHUNK, _MAX_DEFLATE_RATIO * info.compress_size):
            raise fail(
                name,
                f"the member would expand from {info.compress_size} to "
                f"{info.file_size} bytes, more than {_MAX_DEFLATE_RATIO} times: a "
                f"zip bomb, not a file save writes; {_RESAVE}",
            )


def read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: str) -> bytes:
    """The bytes of member ``info``, exactly its declared size, read bounded.

    The member is decompressed a chunk at a time and never past its declared
    size (plus one byte, to notice more), so what a lying central directory
    costs is bounded by what it declares (:func:`check_members` bounds that
    by the file). Any corruption is an :class:`InvalidFileError` at ``path``.
    """
    expected = info.file_size
    chunks = []
    got = 0
    try:
        with zf.open(info) as stream:
            while got <= expected:
                chunk = stream.read(min(_CHUNK, expected + 1 - got))
                if not chunk:
                    break
                chunks.append(chunk)
                got += len(chunk)
    except (
        zipfile.BadZipFile,
        EOFError,
        OSError,
        zlib.error,
        RuntimeError,
        NotImplementedError,
        ValueError,
    ) as exc:
        # Bad CRC, a stream cut short, a local header that disagrees with the
        # central directory: zipfile's own errors, named after the entry.
        raise fail(
            path, f"member {info.filename!r} cannot be read ({exc}); {_RESAVE}"
        ) from exc
    if got != expected:
        raise fail(
            path,
            f"member {info.filename!r} holds {'more' if got > expected else got} "
            f"bytes, not the {expected} it declares: the file is truncated or "
            f"corrupt; {_RESAVE}",
        )
    return b"".join(chunks)


def read_manifest(zf: zipfile.ZipFile) -> Any:
    """The parsed ``manifest.json`` of ``zf``, size-checked before reading."""
    try:
        info = zf.getinfo(MANIFEST)
    except KeyError:
        raise InvalidFileError(
            f"Not a sklearn_rmtl safe file: the zip has no {MANIFEST}."
        ) from None
    if info.file_size > _MAX_MANIFEST_BYTES:
        raise fail(MANIFEST, "the manifest is implausibly large")
    data = read_member(zf, info, MANIFEST)
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise fail(MANIFEST, f"not valid JSON ({exc})") from exc


class TreeReader:
    """Reads plain values back from a manifest tree; every step is validated.

    Parameters
    ----------
    zf : zipfile.ZipFile
        The open archive, whose members :func:`check_members` accepted: its
        arrays are stored, uncompressed, and hold the bytes they declare.
    table : object
        The manifest's ``arrays`` entry: name -> ``{"dtype", "shape"}``; it
        must list exactly the ``.npy`` members of ``zf``.
    """

    def __init__(self, zf: zipfile.ZipFile, table: Any) -> None:
        if not isinstance(table, dict):
            raise fail("arrays", "expected an object")
        self.zf = zf
        self.table: dict[str, tuple[np.dtype, tuple[int, ...]]] = {}
        for name, entry in table.items():
            entry = expect(entry, {"dtype", "shape"}, f"arrays/{name}")
            if not isinstance(entry["shape"], list):
                raise fail(f"arrays/{name}", "shape must be a list")
            shape = tuple(non_negative_int(s, f"arrays/{name}") for s in entry["shape"])
            self.table[name] = (parse_dtype(entry["dtype"], f"arrays/{name}"), shape)
        members = zf.namelist()
        expected = {MANIFEST} | {name + NPY for name in self.table}
        duplicated = sorted(m for m, n in Counter(members).items() if n > 1)
        extra = sorted(set(members) - expected)
        missing = sorted(expected - set(members))
        if duplicated or extra or missing:
            raise fail(
                "archive",
                "its files do not match the manifest (extra: "
                f"{extra}, duplicated: {duplicated}, missing: {missing})",
            )
        # Checked before anything is read or allocated: every declared shape
        # is backed by a member of that size, stored (check_members), and the
        # members by bytes of the file, so what arrays (and networks built to
        # their shapes) take in memory is bounded by the file's size.
        total = 0
        for name, (dtype, shape) in self.table.items():
            nbytes = dtype.itemsize * math.prod(shape)
            info = zf.getinfo(name + NPY)
            if not nbytes <= info.file_size <= nbytes + _MAX_NPY_HEADER:
                raise fail(f"arrays/{name}", f"array {name!r} has the wrong size")
            total += info.file_size
        if total > _archive_size(zf):
            raise fail("archive", "its arrays declare more bytes than the file holds")
        self.used: set[str] = set()
        #: Objects built so far, by manifest path, for references.
        self.objects: dict[str, Any] = {}

    def check_all_used(self) -> None:
        """Refuse arrays that the manifest declares but nothing references."""
        unused = sorted(set(self.table) - self.used)
        if unused:
            raise fail("arrays", f"arrays {unused} are not used by the estimator")

    def array(self, name: Any, path: str) -> np.ndarray:
        """The array ``name``, checked against its declared dtype and shape."""
        if not isinstance(name, str) or name not in self.table:
            raise fail(path, f"refers to an unknown array {name!r}")
        if name in self.used:
            raise fail(path, f"array {name!r} is referenced twice")
        self.used.add(name)
        dtype, shape = self.table[name]
        nbytes = dtype.itemsize * math.prod(shape)
        data = read_member(self.zf, self.zf.getinfo(name + NPY), path)
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
            raise fail(
                path, f"array {name!r} is not a valid .npy file ({exc})"
            ) from exc
        file_shape, _, file_dtype = header
        if (
            file_dtype.hasobject
            or file_dtype != dtype
            or tuple(file_shape) != shape
            or len(data) - stream.tell() != nbytes
        ):
            raise fail(
                path,
                f"array {name!r} holds {file_dtype} {tuple(file_shape)}, not the "
                f"{dtype} {shape} the manifest declares",
            )
        stream.seek(0)
        return np.load(stream, allow_pickle=False)

    def declared_bytes(self, names: Any) -> int:
        """Bytes of data the manifest declares for the known arrays ``names``."""
        entries = [self.table.get(n) for n in names if isinstance(n, str)]
        return sum(d.itemsize * math.prod(s) for d, s in filter(None, entries))

    def scalar(self, node: Any, path: str) -> Any:
        """None, a bool, a number or a str (tagged: NumPy and non-finite ones)."""
        if node is None or isinstance(node, bool | int | float | str):
            return node
        tag = node.get(TYPE) if isinstance(node, dict) else None
        if tag == "float":
            node = expect(node, {TYPE, "value"}, path)
            if node["value"] not in ("nan", "inf", "-inf"):
                raise fail(path, f"invalid float {node['value']!r}")
            return float(node["value"])
        if tag == "scalar":
            node = expect(node, {TYPE, "dtype", "value"}, path)
            dtype = parse_dtype(node["dtype"], path)
            value = self.scalar(node["value"], path)
            if isinstance(value, dict | list) or value is None:
                raise fail(path, "invalid scalar value")
            try:
                return dtype.type(value)
            except (TypeError, ValueError, OverflowError) as exc:
                raise fail(path, f"invalid {dtype} scalar {value!r}") from exc
        raise fail(path, f"expected a scalar, got {str(node)[:80]}")

    def value(self, node: Any, path: str) -> Any:
        """Any plain value, nested (the inverse of :meth:`TreeWriter.value`)."""
        if isinstance(node, list):
            return [self.value(v, f"{path}/{i}") for i, v in enumerate(node)]
        if not isinstance(node, dict):
            return self.scalar(node, path)
        if TYPE not in node:
            return {k: self.value(v, f"{path}/{k}") for k, v in node.items()}
        tag = node[TYPE]
        if tag == "tuple":
            items = expect(node, {TYPE, "items"}, path)["items"]
            if not isinstance(items, list):
                raise fail(path, "tuple items must be a list")
            return tuple(self.value(v, f"{path}/{i}") for i, v in enumerate(items))
        if tag == "dict":
            pairs = expect(node, {TYPE, "items"}, path)["items"]
            if not isinstance(pairs, list) or not all(
                isinstance(p, list) and len(p) == 2 for p in pairs
            ):
                raise fail(path, "dict items must be [key, value] pairs")
            return {
                self.scalar(k, path): self.value(v, f"{path}/{i}")
                for i, (k, v) in enumerate(pairs)
            }
        if tag == "ndarray":
            return self.array(expect(node, {TYPE, "name"}, path)["name"], path)
        if tag == "object_array":
            node = expect(node, {TYPE, "shape", "items"}, path)
            if not isinstance(node["shape"], list) or not isinstance(
                node["items"], list
            ):
                raise fail(path, "object_array needs a shape and an items list")
            shape = tuple(non_negative_int(s, path) for s in node["shape"])
            if math.prod(shape) != len(node["items"]):
                raise fail(path, f"{len(node['items'])} items do not fill {shape}")
            out = np.empty(len(node["items"]), dtype=object)
            for i, v in enumerate(node["items"]):
                out[i] = self.scalar(v, f"{path}[{i}]")
            return out.reshape(shape)
        return self.scalar(node, path)

    def ref(self, node: Any, path: str, kind: type) -> Any | None:
        """The object a ``ref`` node points to (of type ``kind``), else None."""
        if not (isinstance(node, dict) and node.get(TYPE) == "ref"):
            return None
        target = expect(node, {TYPE, "path"}, path)["path"]
        obj = self.objects.get(target) if isinstance(target, str) else None
        if not isinstance(obj, kind):
            raise fail(path, f"refers to {target!r}, which is no {kind.__name__}")
        return obj

    def tagged(self, node: Any, tag: str, keys: set[str], path: str) -> dict[str, Any]:
        """``node`` as an object tagged ``tag`` with exactly ``keys`` besides."""
        node = expect(node, {TYPE, *keys}, path)
        if node[TYPE] != tag:
            raise fail(path, f"expected a {tag}, got {node[TYPE]!r}")
        return node
