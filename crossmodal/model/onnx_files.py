"""The files of an exported tower, shared by the text and image exports: where they live, how
ONNX Runtime's optimised graph is saved with its weights beside it, how a finished export is put
in place whole, and how it is opened. Light: onnxruntime is imported only to save or open one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from crossmodal.errors import CrossmodalError, ModelLoadError
from crossmodal.model.cache import cache_dir
from crossmodal.model.specs import ModelIdentity, fingerprint_of, parse_model_spec

DISABLE_ENV_VAR = "CROSSMODAL_NO_ONNX"  # set to 1: every encoder is the torch model
MANIFEST = "export.json"
UNSUPPORTED = "unsupported.json"  # a model found impossible (or unfit) to export, tried once


def exports_disabled() -> bool:
    return os.environ.get(DISABLE_ENV_VAR, "").lower() in ("1", "true", "yes")


def export_folder(kind: str, fingerprint: str, root: Path | None = None) -> Path:
    """Where the `kind` ("text-encoders", "image-encoders") export of some weights lives."""
    key = hashlib.sha256(fingerprint.encode()).hexdigest()[:16]
    return (root or cache_dir() / kind) / key


def find_export(
    kind: str, spec: str, root: Path | None = None
) -> tuple[Path, ModelIdentity] | None:
    """The folder of the `kind` export of the weights `spec` loads now, and the identity to
    check it against (the spec as asked, the rest as recorded); None when there is none or
    exports are off. Found by the weights' fingerprint, never by name: an export of local
    weights that have since changed is never found."""
    if exports_disabled():
        return None
    try:
        parsed = parse_model_spec(spec)
        folder = export_folder(kind, fingerprint_of(parsed), root)
        made_from = ModelIdentity.from_dict(json.loads((folder / MANIFEST).read_text())["identity"])
    except (CrossmodalError, OSError, ValueError, KeyError, TypeError):
        return None  # none made yet; or the torch path says what is wrong with the spec
    return folder, ModelIdentity(
        parsed.text, made_from.fingerprint, made_from.dim, made_from.preprocess
    )


def checked_manifest(folder: Path, identity: ModelIdentity, fmt: int, what: str) -> dict[str, Any]:
    """The manifest of the `what` ("text", "image") export in `folder`, refusing one in another
    format than `fmt` or made from another model than `identity`."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        made_from = ModelIdentity.from_dict(manifest["identity"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"no usable {what} export in {folder}: {exc}") from exc
    if manifest.get("format") != fmt:
        raise ModelLoadError(
            f"the {what} export in {folder} is in an older format; the next run with the "
            "torch model makes it again"
        )
    if not made_from.compatible_with(identity):
        raise ModelLoadError(
            f"the {what} export in {folder} was made from {made_from.spec} "
            f"({made_from.fingerprint}), not {identity.spec} ({identity.fingerprint})"
        )
    return dict(manifest)


def export_settled(folder: Path, fmt: int) -> bool:
    """Whether the export in `folder` was made in format `fmt`, or found unfit in it: nothing
    to do. An export in an older format is made again, and a model found unfit by an older
    format (or a marker that does not say) is tried once more."""
    for name in (MANIFEST, UNSUPPORTED):
        try:
            if json.loads((folder / name).read_text()).get("format") == fmt:
                return True
        except (OSError, ValueError, AttributeError):
            pass
    return False


def make_once(folder: Path, make: Callable[[], Path], fmt: int) -> Path | None:
    """`make()` the export in `folder`, in format `fmt`; if it fails for any reason but the
    cache's (an OSError: full or read-only, tried again next time), mark the model as unfit in
    that format, with the reason, so it is tried once per format, and return None."""
    try:
        return make()
    except OSError:
        raise
    except Exception as exc:  # unfit, or torch's exporter, onnx or ONNX Runtime failed on it
        folder.mkdir(parents=True, exist_ok=True)
        (folder / MANIFEST).unlink(missing_ok=True)  # an older format's export: not to be found
        (folder / UNSUPPORTED).write_text(json.dumps({"reason": str(exc), "format": fmt}) + "\n")
        return None


def save_optimised(source: Path, folder: Path, graph: str, weights: str) -> None:
    """Save ONNX Runtime's optimised graph of the model in `source` as `folder/graph`, its weights
    in `folder/weights`, and remove `source`. An encoder then maps the weights instead of parsing
    them out of the graph, and skips the optimisation (0.02 s to open ViT-B-32's text tower here,
    against 0.6 s). EXTENDED fuses operators for any CPU; ALL would add layouts for this one."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(folder / graph)
    options.add_session_config_entry(
        "session.optimized_model_external_initializers_file_name", weights
    )
    options.add_session_config_entry(
        "session.optimized_model_external_initializers_min_size_in_bytes", "1024"
    )
    onnxruntime.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    source.unlink()


def open_session(path: Path, threads: int | None = None, *, prepack: bool = False) -> Any:
    """An ONNX Runtime session over an export saved by `save_optimised`. `prepack`: repack the
    weights for the matrix kernels, 0.1 s more to open for 12-17 % more int8 images/s here."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only
    options.intra_op_num_threads = threads or min(4, os.cpu_count() or 1)  # enough for a query
    # Optimised when it was exported: optimising again would only cost start-up time. Without
    # prepacking, ViT-B-32's text tower opens in 0.02 s instead of 0.16 s, and 64 texts encode
    # as fast.
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    if not prepack:
        options.add_session_config_entry("session.disable_prepacking", "1")
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ONNX Runtime raises its own untyped errors
        raise ModelLoadError(f"cannot open the export in {path.parent}: {exc}") from exc


@contextlib.contextmanager
def staged(folder: Path) -> Iterator[Path]:
    """A staging folder beside `folder` to write an export into; moved to `folder` whole when
    the block ends without error, so a reader never sees half an export. Removed otherwise."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=folder.parent))
    staging.chmod(0o755)  # mkdtemp's 0700 would hide the export from the cache's other readers
    try:
        yield staging
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
        try:
            staging.rename(folder)
        except OSError:
            if not (folder / MANIFEST).is_file():  # not another process's finished export
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
