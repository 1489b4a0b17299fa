"""Import LanceDB without paying up front for what a local database never uses.

Two costs of `import lancedb`, measured here, are avoided; neither changes what LanceDB does.

The REST client of remote namespaces.

`import lancedb` imports `lance_namespace`, whose generated OpenAPI client package
(`lance_namespace_urllib3_client`) imports every one of its API modules in its `__init__`:
about 0.9 of the 2 s that `import lancedb` took here, for a client that a local database never
calls. The package is registered first as a module that knows where its files are, so the
submodules LanceDB imports by name load as usual, and that runs the package's own `__init__`
the first time anything asks it for an attribute: deferred, never removed.

Method-override checks on Python < 3.12. There LanceDB decorates its classes with the
`overrides` package, which inspects every decorated method's signature against its base
classes as the class is made: about 0.15 s of the import. On 3.12 and later LanceDB uses
`typing.override`, a marker that checks nothing; the import here gives 3.11 the same marker
while LanceDB's modules are made, and puts the real package back afterwards.

And, for a process that only queries, pandas: LanceDB imports it lazily, but
`import pyarrow.dataset` imports it whole where it is installed (Gradio installs it): 0.15-0.3 s.
After `leave_out_pandas`, LanceDB and pyarrow run as on a machine without pandas, which both
support.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import sys
import types
from collections.abc import Iterator
from typing import Any

CLIENT = "lance_namespace_urllib3_client"


class _DeferredPackage(types.ModuleType):
    """A package whose `__init__` runs on the first attribute it does not have yet."""

    def __getattr__(self, name: str) -> Any:
        spec = self.__spec__
        if name.startswith("__") or spec is None or spec.loader is None:
            raise AttributeError(name)
        self.__class__ = types.ModuleType  # type: ignore[assignment]  # once: an ordinary package now
        spec.loader.exec_module(self)
        return getattr(self, name)


def _defer(package: str) -> None:
    if package in sys.modules:
        return
    spec = importlib.util.find_spec(package)
    if spec is None or spec.submodule_search_locations is None or spec.loader is None:
        return  # not installed, or not a package: nothing to defer
    module = _DeferredPackage(package)
    module.__spec__ = spec
    module.__path__ = list(spec.submodule_search_locations)
    module.__file__ = spec.origin
    module.__loader__ = spec.loader
    module.__package__ = package
    sys.modules[package] = module


class _NoPandas(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


_pandas_left_out = False


def leave_out_pandas() -> None:
    """Have LanceDB and pyarrow run in this process as where pandas is not installed. For a
    process that only queries; call it before the first `Store.open`. Both libraries decide
    once, as LanceDB is imported, so it lasts for the process (other libraries still find
    pandas). Does nothing if LanceDB or pyarrow's datasets are imported already."""
    global _pandas_left_out
    _pandas_left_out = True


@contextlib.contextmanager
def _without_pandas() -> Iterator[None]:
    if not _pandas_left_out or any(m in sys.modules for m in ("pandas", "pyarrow.dataset")):
        yield
        return
    finder = _NoPandas()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


def _marker(method: Any = None, **_: Any) -> Any:
    """`typing.override` as Python 3.12 has it: marks the method, checks nothing."""

    def mark(function: Any) -> Any:
        with contextlib.suppress(AttributeError, TypeError):
            function.__override__ = True
        return function

    return mark if method is None else mark(method)


@contextlib.contextmanager
def _override_markers_only() -> Iterator[None]:
    if sys.version_info >= (3, 12) or "lancedb" in sys.modules:
        yield
        return
    stand_in = types.ModuleType("overrides")
    stand_in.override = _marker  # type: ignore[attr-defined]
    stand_in.EnforceOverrides = type("EnforceOverrides", (), {})  # type: ignore[attr-defined]
    real = sys.modules.get("overrides")
    sys.modules["overrides"] = stand_in
    try:
        yield
    finally:
        if real is None:
            sys.modules.pop("overrides", None)
        else:
            sys.modules["overrides"] = real


def import_lancedb() -> Any:
    _defer(CLIENT)
    with _override_markers_only(), _without_pandas():
        import lancedb

    return lancedb
