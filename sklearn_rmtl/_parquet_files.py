"""The row groups of Parquet files, read as one table with one schema.

:class:`ParquetFiles` opens a Parquet file, a folder of them or a pyarrow
dataset and reads any row group by its index among all files, with the
types common to every file: what pandas writes differently in different
files (int64 here, float64 where a file has a NaN) is unified, real type
drift is named, pandas' categorical columns are known, and a file that
changed after it was opened is refused rather than read with stale counts.
:class:`~sklearn_rmtl.parquet.ParquetSource` reads its blocks through it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

_EXTRA = (
    'Reading Parquet data needs pyarrow: pip install "sklearn-rmtl[parquet]" '
    '(or pip install "pyarrow>=14").'
)


def pyarrow_modules() -> tuple[Any, Any, Any]:
    """pyarrow, pyarrow.dataset and pyarrow.parquet, or a clear ImportError."""
    try:
        import pyarrow as pa
        import pyarrow.dataset as ds
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ImportError(_EXTRA) from exc
    return pa, ds, pq


class ParquetFiles:
    """Every row group of a Parquet dataset, in file order, under one schema.

    Parameters
    ----------
    path : str, path-like, list of them, or pyarrow.dataset.FileSystemDataset
        A Parquet file, a folder of Parquet files, a list of files, or a
        dataset of Parquet files.
    session : str or None
        The session column, whose ids must have one kind in every file.

    Attributes
    ----------
    schema : pyarrow.Schema
        The columns with the type every file is read with.
    group_rows : list of int
        Rows of each row group, in reading order.
    categoricals : set of str
        The columns pandas' metadata marks as categorical (Parquet keeps
        integer categories as plain integers).
    """

    def __init__(self, path: Any, *, session: str | None) -> None:
        pa, ds, _ = pyarrow_modules()
        if isinstance(path, ds.Dataset):
            dataset = path
        else:
            paths = (
                [os.fspath(p) for p in path]
                if isinstance(path, list | tuple)
                else os.fspath(path)
            )
            try:
                dataset = ds.dataset(paths, format="parquet")
            except (FileNotFoundError, pa.ArrowInvalid) as exc:
                raise ValueError(
                    f"Cannot read Parquet data at {path!r}: {exc}"
                ) from exc
        if not isinstance(dataset, ds.FileSystemDataset):
            raise TypeError(
                "ParquetSource reads a Parquet file, a folder of them or a "
                f"pyarrow FileSystemDataset of Parquet files, got {type(dataset)}."
            )
        self._dataset = dataset
        # A folder is listed again at every pass: files added or removed
        # since it was opened would change its rows.
        self._folder = (
            os.fspath(path)
            if isinstance(path, str | os.PathLike) and os.path.isdir(path)
            else None
        )
        self._groups: list[tuple[Any, int]] = []
        self.group_rows: list[int] = []
        # Each file's size and time when opened: a file that changes later
        # no longer has the row groups counted here.
        self._stamps: dict[str, tuple[Any, Any]] = {}
        types: dict[str, dict[str, Any]] = {}  # column -> file -> type
        for fragment in dataset.get_fragments():
            try:
                groups = fragment.row_groups
                physical = fragment.physical_schema
            except (OSError, pa.ArrowException) as exc:
                raise ValueError(
                    f"Cannot read the Parquet file {fragment.path}: {exc}"
                ) from exc
            self._stamps[fragment.path] = self._stamp(fragment.path)
            for field in physical:
                types.setdefault(field.name, {})[fragment.path] = field.type
            for group in groups:
                self._groups.append((fragment, group.id))
                self.group_rows.append(group.num_rows)
        self._files = self._listing()
        self.schema, self._drift = _unify(dataset.schema, types, session)
        self.categoricals = pandas_categoricals(self.schema)
        self._cache: tuple[Any, Any] | None = None

    def _listing(self) -> list[str] | None:
        """The folder's Parquet files as pyarrow discovers them; None for files."""
        if self._folder is None:
            return None
        _, ds, _ = pyarrow_modules()
        return sorted(ds.dataset(self._folder, format="parquet").files)

    def _stamp(self, path: str) -> tuple[Any, Any]:
        """A file's size and modification time, to tell that it changed."""
        info = self._dataset.filesystem.get_file_info(path)
        return info.size, info.mtime_ns

    def check_types(self, columns: Sequence[str]) -> None:
        """Fail on a column whose type differs between files beyond repair."""
        drift = [self._drift[c] for c in columns if c in self._drift]
        if drift:
            raise TypeError(" ".join(drift))

    def read_group(self, g: int, columns: list[str], n_rows: int) -> Any:
        """Row group ``g`` (``columns`` only) as a pyarrow Table.

        ``n_rows`` (all rows when opened) goes into the error raised when
        the group's file changed since.
        """
        # A row group that straddles two blocks is read once for both.
        key = (g, tuple(columns))
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        pa, _, _ = pyarrow_modules()
        if g == 0 and self._listing() != self._files:
            raise ValueError(
                f"Files were added to or removed from the Parquet folder "
                f"{self._folder} after this ParquetSource was opened (it had "
                f"{n_rows} rows in all then, in {len(self._stamps)} files). Write "
                "every file before reading the folder, and open a new "
                "ParquetSource for the new data."
            )
        fragment, group = self._groups[g]
        path = fragment.path
        if self._stamp(path) != self._stamps[path]:
            raise ValueError(
                f"The Parquet file {path} changed after this ParquetSource was "
                f"opened (it had {n_rows} rows in all then): its rows are "
                "no longer those counted. Write the file completely before "
                "reading it, and open a new ParquetSource for the new data."
            )
        try:
            # Every file read with the dataset's (unified) types.
            table = fragment.subset(row_group_ids=[group]).to_table(
                schema=self.schema, columns=columns
            )
        except (OSError, pa.ArrowException) as exc:
            raise ValueError(
                f"Cannot read row group {group} of the Parquet file {path}: {exc}"
            ) from exc
        self._cache = (key, table)
        return table


def pandas_categoricals(schema: Any) -> set[str]:
    """The columns that pandas' metadata in ``schema`` says were categorical."""
    try:
        columns = json.loads((schema.metadata or {})[b"pandas"])["columns"]
        return {
            str(c["field_name"])
            for c in columns
            if c.get("pandas_type") == "categorical"
        }
    except (KeyError, TypeError, ValueError):  # no or foreign metadata
        return set()


def _family(kind: Any) -> str:
    """The kind of value a session id of type ``kind`` is, for comparing ids."""
    pa, _, _ = pyarrow_modules()
    for name, test in (
        ("integer", pa.types.is_integer),
        ("floating", pa.types.is_floating),
        ("string", lambda k: pa.types.is_string(k) or pa.types.is_large_string(k)),
    ):
        if test(kind):
            return name
    return str(kind)


def _unify(
    schema: Any, types: dict[str, dict[str, Any]], session: str | None
) -> tuple[Any, dict[str, str]]:
    """The dataset's schema with each column's type common to every file.

    pandas writes an integer column as int64 in one file and float64 in
    another that has a NaN: such a column is read as float64 everywhere, as
    pyarrow's permissive promotion does (an all-null column takes the others'
    type). Types with no common one (text and numbers) are drift, and so are
    session ids of different kinds (integers and floats), which would no
    longer compare as in one file. Returns the schema and, per drifting
    column, the error to raise when it is read.
    """
    pa, _, _ = pyarrow_modules()
    drift: dict[str, str] = {}
    for name in schema.names:
        by_file = types.get(name, {})
        kinds = {str(t): t for t in by_file.values()}
        if len(kinds) < 2:
            continue
        files = "; ".join(f"{path}: {kind}" for path, kind in by_file.items())
        try:
            common = pa.unify_schemas(
                [pa.schema([(name, t)]) for t in kinds.values()],
                promote_options="permissive",
            )
        except (pa.ArrowTypeError, pa.ArrowInvalid):
            drift[name] = (
                f"Column {name!r} has different types in the Parquet files "
                f"({files}) with no common type; write it with one type in "
                "every file."
            )
            continue
        real = {_family(t) for t in kinds.values() if not pa.types.is_null(t)}
        if name == session and len(real) > 1:
            drift[name] = (
                f"The session column {name!r} holds ids of different types in "
                f"the Parquet files ({files}); write the ids with one type "
                "(e.g. all integers or all strings) in every file."
            )
            continue
        field = pa.field(name, common.field(name).type)
        schema = schema.set(schema.get_field_index(name), field)
    return schema, drift
