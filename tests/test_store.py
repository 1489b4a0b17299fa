import re
from pathlib import Path

import numpy as np
import pytest

from crossmodal.errors import ModelMismatchError, StoreError, TableNotFoundError
from crossmodal.model.specs import ModelIdentity
from crossmodal.store import Store
from crossmodal.store.filters import Filters
from crossmodal.store.where import sql_string

IDENTITY = ModelIdentity("tiny-a", "tiny-a", 4, "p")


def test_missing_database_names_the_index_command(tmp_path: Path):
    with pytest.raises(StoreError) as info:
        Store.open(tmp_path / "nope")
    assert "crossmodal index PHOTOS_DIR --db" in str(info.value)


def test_missing_image_table_names_the_index_command(tmp_path: Path):
    store = Store.open(tmp_path / "db", create=True)
    with pytest.raises(TableNotFoundError, match="crossmodal index"):
        store.images(IDENTITY)


def test_table_records_its_model_and_refuses_another(tmp_path: Path):
    store = Store.open(tmp_path / "db", create=True)
    store.images(IDENTITY, create=True)
    assert store.info("images").model == IDENTITY
    other = ModelIdentity("tiny-b", "tiny-b", 4, "p")
    with pytest.raises(ModelMismatchError) as info:
        Store.open(tmp_path / "db").images(other)
    message = str(info.value)
    assert "--model tiny-a" in message
    assert "--model tiny-b --rebuild" in message


def test_moved_model_directory_with_same_weights_is_accepted(tmp_path: Path):
    store = Store.open(tmp_path / "db", create=True)
    store.images(IDENTITY, create=True)
    moved = ModelIdentity("/elsewhere/tiny-a", "tiny-a", 4, "p")
    assert store.images(moved).identity == moved


def test_text_tables_are_upserted_by_text(tmp_path: Path):
    store = Store.open(tmp_path / "db", create=True)
    table = store.texts("labels", IDENTITY, create=True)
    table.add(["cat", "dog"], np.eye(4, dtype=np.float32)[:2])
    table.add(["dog", "it's"], np.eye(4, dtype=np.float32)[2:])
    texts, vectors = table.all()
    assert sorted(texts) == ["cat", "dog", "it's"]
    assert vectors[texts.index("dog")].tolist() == [0, 0, 1, 0]
    table.remove(["it's"])
    assert sorted(table.all()[0]) == ["cat", "dog"]
    assert store.text_table_names() == ["labels"]


def test_sql_string_escapes_quotes():
    assert sql_string("it's") == "'it''s'"


def test_only_the_store_package_imports_lancedb():
    package = Path(__file__).resolve().parent.parent / "crossmodal"
    importers = {
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if re.search(r"^\s*(import|from) lancedb\b", path.read_text(), re.MULTILINE)
    }
    assert importers == {"store/importing.py", "store/upkeep.py", "store/tables.py"}


def test_only_the_store_and_the_ray_engine_use_lance_itself():
    """Searches run on Lance's scanner, reached through LanceDB's table in the store; the Ray
    engine writes Lance fragments. Nothing else touches Lance."""
    package = Path(__file__).resolve().parent.parent / "crossmodal"
    users = {
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if re.search(
            r"^\s*(import|from) lance\b|to_lance\(|\.to_table\(\s*nearest", path.read_text(), re.M
        )
    }
    assert users == {"store/tables.py", "store/scanner.py", "indexing/on_ray.py"}


def test_damaged_table_files_give_a_store_error_with_the_fix(tmp_path: Path):
    store = Store.open(tmp_path / "db", create=True)
    table = store.images(IDENTITY, create=True)
    from datetime import datetime

    from crossmodal.store.records import ImageRow

    now = datetime(2024, 1, 1)
    row = ImageRow("/p/a.jpg", "/p", "a.jpg", ".jpg", 1, 1, "h", 1, 1, "JPEG", None, now, now)
    table.upsert([row], np.eye(4, dtype=np.float32)[:1])
    for data_file in (tmp_path / "db" / "images.lance" / "data").iterdir():
        data_file.unlink()
    damaged = Store.open(tmp_path / "db").images(IDENTITY)
    with pytest.raises(StoreError) as info:
        damaged.nearest(np.eye(4, dtype=np.float32)[0], 1)
    assert "could not be read or written" in str(info.value)
    assert "--rebuild" in str(info.value)
    with pytest.raises(StoreError, match="could not be read or written"):  # not the filter's
        damaged.nearest(np.eye(4, dtype=np.float32)[0], 1, Filters(folder="/p"))
    with pytest.raises(StoreError, match="--rebuild"):
        damaged.rows()


def test_a_missing_text_table_is_named_as_the_user_names_it(tmp_path: Path):
    from crossmodal.errors import TableNotFoundError

    store = Store.open(tmp_path / "db", create=True)
    with pytest.raises(TableNotFoundError) as info:
        store.texts("descriptions", IDENTITY)
    assert info.value.table == "descriptions"
    assert str(info.value).startswith("no table 'descriptions' in database")
    assert "--table descriptions" in str(info.value)


def test_lancedb_loads_without_the_remote_namespace_client_until_it_is_used(tmp_path) -> None:
    """The REST client a local database never calls is deferred, not removed: the first use of
    the package runs its real `__init__`, and a table still opens and answers."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from crossmodal.store import Store\n"
        f"store = Store.open({str(tmp_path / 'db')!r}, create=True)\n"
        "print('lance_namespace_urllib3_client.api' in sys.modules)\n"
        "import lance_namespace_urllib3_client as client\n"
        "print(client.ApiClient.__module__, 'lance_namespace_urllib3_client.api' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split("\n")[:2] == [
        "False",
        "lance_namespace_urllib3_client.api_client True",
    ]
