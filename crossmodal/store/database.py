"""The database: a LanceDB folder holding one image table and any text tables.

Opens and creates tables, and checks that the model asking is the model that wrote them.
"""

from __future__ import annotations

import json
import os
import re
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from crossmodal.errors import (
    DiskFullError,
    ModelMismatchError,
    StoreError,
    TableNotFoundError,
    is_disk_full,
)
from crossmodal.media.remote import ObjectStorage, is_uri
from crossmodal.model.specs import ModelIdentity
from crossmodal.store.failures import lance_reason
from crossmodal.store.importing import import_lancedb
from crossmodal.store.lock import WriterLock
from crossmodal.store.records import (
    META_KEY,
    SCHEMA_VERSION,
    IndexPolicy,
    TableInfo,
    image_schema,
    text_schema,
)
from crossmodal.store.tables import ImageTable, TextTable

# LanceDB's Rust logger prints deprecation notices about its own internal queries (hybrid search)
# to stderr; they are not the user's to act on. Read when lancedb is first imported; a user who
# wants them sets LANCEDB_LOG=warn.
os.environ.setdefault("LANCEDB_LOG", "error")

IMAGES = "images"
TEXT_PREFIX = "text_"
# Lance file format of new tables. The default (2.2) encodes low-cardinality columns (suffix,
# format, width, height) so that reading one row decodes a whole page: at 1M rows, fetching
# the 13 columns of 10 hits took 18-25 ms in 2.2 and 4 ms in 2.1 (benchmarks/search_latency.py).
FILE_FORMAT = "2.1"


_TABLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def check_text_table_name(name: str) -> None:
    """Text table names become folder names in the database: letters, digits, - and _ only."""
    if not _TABLE_NAME.fullmatch(name):
        raise StoreError(
            f"text table name {name!r} cannot be used: write 1 to 64 letters, digits, '-' or '_', "
            "starting with a letter or digit, e.g. --table captions"
        )


class Store:
    """A crossmodal database: a LanceDB directory with one image table and any text tables.

    The directory is a local folder or a prefix on object storage (s3://, gs://, az://), opened
    with LanceDB's `storage_options` (which fall back to the standard environment variables).
    """

    def __init__(
        self,
        db_dir: Path | str,
        connection: Any,
        policy: IndexPolicy | None = None,
        storage_options: dict[str, str] | None = None,
    ) -> None:
        self.db_dir = db_dir  # a resolved Path, or the URI of a database on object storage
        self._db = connection
        self.policy = policy or IndexPolicy()  # when tables get ANN indexes, how they are searched
        self.storage_options = dict(storage_options or {})
        self.storage = ObjectStorage(self.storage_options)  # reads photos stored beside it

    @property
    def remote(self) -> bool:
        return isinstance(self.db_dir, str)

    @classmethod
    def open(
        cls,
        db_dir: str | os.PathLike[str],
        *,
        create: bool = False,
        policy: IndexPolicy | None = None,
        storage_options: dict[str, str] | None = None,
    ) -> Store:
        if is_uri(db_dir):
            return cls._open_remote(str(db_dir).rstrip("/"), create, policy, storage_options)
        lancedb = import_lancedb()
        path = Path(db_dir).expanduser().resolve()
        if not path.exists() and not create:
            raise StoreError(
                f"no database at {path}.\nFix: build one with "
                f"`crossmodal index PHOTOS_DIR --db {db_dir}`"
            )
        if path.exists() and not path.is_dir():
            raise StoreError(f"{path} is a file, not a database folder; choose another --db")
        try:
            path.mkdir(parents=True, exist_ok=True)
            # no read_consistency_interval: each table use checks out the latest commit itself
            connection = lancedb.connect(str(path))
            return cls(path, connection, policy)
        except Exception as exc:
            if is_disk_full(exc):
                raise DiskFullError(str(path)) from exc
            raise StoreError(f"cannot open database {path}: {exc}") from exc

    @classmethod
    def _open_remote(
        cls, uri: str, create: bool, policy: IndexPolicy | None, options: dict[str, str] | None
    ) -> Store:
        lancedb = import_lancedb()
        try:
            connection = lancedb.connect(uri, storage_options=dict(options or {}))
            store = cls(uri, connection, policy, options)
            names = store.table_names()
        except Exception as exc:
            raise StoreError(
                f"cannot open database {uri}: {lance_reason(exc)}\nFix: check the bucket, and "
                "the credentials and endpoint in --storage-option or the AWS_* environment"
            ) from exc
        if not names and not create:
            raise StoreError(
                f"no database at {uri}.\nFix: build one with "
                f"`crossmodal index PHOTOS_DIR --db {uri}`"
            )
        return store

    def writer_lock(self, wait: float = 0.0) -> AbstractContextManager[object]:
        """The lock one index run holds. A bucket has no file lock: there, concurrent writers
        rely on Lance's optimistic commits (a commit that conflicts is retried or refused,
        never half-applied; docs/scale.md)."""
        if self.remote:
            return nullcontext()
        assert isinstance(self.db_dir, Path)
        return WriterLock(self.db_dir, wait=wait)

    def table_names(self) -> list[str]:
        return sorted(self._db.list_tables().tables)

    def text_table_names(self) -> list[str]:
        return [n[len(TEXT_PREFIX) :] for n in self.table_names() if n.startswith(TEXT_PREFIX)]

    def info(self, table: str) -> TableInfo:
        lance_table = self._open(table)
        meta = _read_meta(lance_table, table, self.db_dir)
        return TableInfo(
            table,
            meta["kind"],
            int(lance_table.count_rows()),
            ModelIdentity.from_dict(meta["model"]),
            int(meta["schema_version"]),
        )

    def images(self, identity: ModelIdentity, *, create: bool = False) -> ImageTable:
        """The image table, checked against `identity`; created when asked and missing."""
        schema = image_schema(identity.dim, identity)
        return ImageTable(self._table(IMAGES, schema, identity, create), identity, self.policy)

    def texts(self, name: str, identity: ModelIdentity, *, create: bool = False) -> TextTable:
        check_text_table_name(name)
        schema = text_schema(identity.dim, identity)
        table = self._table(TEXT_PREFIX + name, schema, identity, create)
        return TextTable(table, identity, self.policy)

    def _table(self, name: str, schema: Any, identity: ModelIdentity, create: bool) -> Any:
        if create and name not in self.table_names():
            try:
                return self._db.create_table(
                    name,
                    schema=schema,
                    exist_ok=True,
                    storage_options={
                        **self.storage_options,
                        "new_table_data_storage_version": FILE_FORMAT,
                    },
                )
            except (OSError, RuntimeError) as exc:
                if is_disk_full(exc):
                    raise DiskFullError(str(self.db_dir)) from exc
                raise
        table = self._open(name)
        self._check(table, name, identity)
        return table

    def drop(self, table: str) -> None:
        if table in self.table_names():
            self._db.drop_table(table)

    def _open(self, name: str) -> Any:
        if name not in self.table_names():
            if name == IMAGES:
                fix = f"index a folder first: `crossmodal index PHOTOS_DIR --db {self.db_dir}`"
            else:
                fix = (
                    f"load texts first: `crossmodal labels add FILE --db {self.db_dir} "
                    f"--table {name[len(TEXT_PREFIX) :]}`"
                )
            shown = name if name == IMAGES else name[len(TEXT_PREFIX) :]  # as the user names it
            raise TableNotFoundError(shown, str(self.db_dir), fix)
        try:
            return self._db.open_table(name)
        except Exception as exc:
            reason = lance_reason(exc)
            raise StoreError(
                f"cannot open table {name!r} in {self.db_dir}: {reason}\n"
                "Its version files may be missing or damaged; your photos are untouched.\n"
                f"Fix: rebuild it: `crossmodal index PHOTOS_DIR --db {self.db_dir} --rebuild`"
            ) from exc

    def _check(self, table: Any, name: str, identity: ModelIdentity) -> None:
        stored = ModelIdentity.from_dict(_read_meta(table, name, self.db_dir)["model"])
        if not stored.compatible_with(identity):
            raise ModelMismatchError(
                name,
                stored.spec,
                identity.spec,
                fix=f"search with the table's model (--model {stored.spec}), or rebuild the "
                f"table with yours: `crossmodal index PHOTOS_DIR --db {self.db_dir} "
                f"--model {identity.spec} --rebuild`",
            )


def _read_meta(table: Any, name: str, db_dir: Path | str) -> dict[str, Any]:
    raw = (table.schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise StoreError(
            f"table {name!r} in {db_dir} was not written by crossmodal "
            "(no model record); use another --db"
        )
    meta: dict[str, Any] = json.loads(raw)
    version = int(meta.get("schema_version", 0))
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"table {name!r} in {db_dir} has schema version {version}, newer than "
            f"this crossmodal understands ({SCHEMA_VERSION}).\n"
            "Fix: upgrade crossmodal (`pip install -U crossmodal`)"
        )
    return meta
