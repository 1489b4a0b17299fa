"""Import LanceDB without paying for the REST client of remote namespaces up front.

`import lancedb` imports `lance_namespace`, whose generated OpenAPI client package
(`lance_namespace_urllib3_client`) imports every one of its API modules in its `__init__`:
about 0.9 of the 2 s that `import lancedb` took here, for a client that a local database never
calls. The package is registered first as a module that knows where its files are, so the
submodules LanceDB imports by name load as usual, and that runs the package's own `__init__`
the first time anything asks it for an attribute: deferred, never removed.
"""

from __future__ import annotations

import importlib.util
import sys
import types
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


def import_lancedb() -> Any:
    _defer(CLIENT)
    import lancedb

    return lancedb
