"""Indexing on Ray Data: the plan, decoder, encoder and table of `index_folder`, spread over a
cluster. plan (driver) -> decoding tasks -> encoder actors -> Lance fragments written by the
workers (lance-ray) -> per shard, the driver commits them as a staging dataset and merges it into
the table by path, so a killed driver loses only work not merged yet, and a re-run redoes it.

Ray, Ray Data, lance-ray and pylance come with `pip install 'crossmodal[ray]'`; nothing here is
imported until a Ray run starts.
"""

from __future__ import annotations

import functools
import logging
import os
import pickle
import shutil
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pyarrow as pa

from crossmodal.errors import CrossmodalError
from crossmodal.indexing.folders import IndexConfig, IndexProgress, IndexReport, Run, begin_run
from crossmodal.indexing.pipeline import Job, Prepared, pixel_recipe, prepare
from crossmodal.media.images import PixelRecipe
from crossmodal.media.remote import ObjectStorage
from crossmodal.model.encoder import EncoderConfig
from crossmodal.model.specs import Encoder
from crossmodal.store import Store

log = logging.getLogger(__name__)

STAGING_DIR = ".crossmodal-staging"  # inside the database folder; LanceDB lists only *.lance
RAY_EXTRA_HINT = "Fix: install the Ray engine: `pip install 'crossmodal[ray]'`"


@dataclass(frozen=True)
class RayConfig:
    """How a Ray run spreads the work. The indexing options themselves are an `IndexConfig`."""

    address: str | None = None  # None: a local Ray for this run; "auto" or "host:port": a cluster
    actors: int = 1  # encoder actors; each loads the model once
    gpus_per_actor: float = 0.0  # > 0: the actors run on GPUs; 0: on CPUs
    cpus_per_actor: float = 1.0  # CPU cores of a CPU actor, and its torch threads
    decode_cpus: float = 1.0  # CPU cores of one decoding task
    precision: str = "auto"  # of the actors' encoders: fp16 on GPUs, bf16 on CPUs that have it
    shard_rows: int = 2048  # files merged into the table per commit: what a killed driver loses

    def __post_init__(self) -> None:
        if not 1 <= self.actors <= 100_000:
            raise CrossmodalError(f"actors must be from 1 to 100,000, not {self.actors!r}")
        if self.gpus_per_actor < 0 or self.cpus_per_actor <= 0 or self.decode_cpus <= 0:
            raise CrossmodalError(
                "gpus_per_actor must be at least 0, cpus_per_actor and decode_cpus above 0"
            )
        if self.shard_rows < 1:
            raise CrossmodalError(f"shard_rows must be at least 1, not {self.shard_rows!r}")


def index_folder_on_ray(
    root: str | os.PathLike[str],
    store: Store,
    encoder: Encoder,
    config: IndexConfig | None = None,
    ray_config: RayConfig | None = None,
    on_progress: Callable[[IndexProgress], None] | None = None,
) -> IndexReport:
    """`index_folder`, with decoding and encoding on Ray: the same table, plan and report.

    `encoder` is the driver's copy of the model: it names the model and its identity, and the
    actors load the same weights (they refuse to run if their copy's fingerprint differs).
    """
    config = config or IndexConfig()
    ray_config = ray_config or RayConfig()
    if config.decoder == "encoder":
        raise CrossmodalError(
            "the Ray engine's tasks decode with Pillow; leave IndexConfig.decoder at 'auto' or "
            "'threads', or index with the local engine to decode JPEGs on the GPU"
        )
    recipe = pixel_recipe(encoder)
    if recipe is None:
        raise CrossmodalError(
            f"the Ray engine prepares pixels in its decoding tasks, and {encoder.identity.spec}'s "
            "image preprocessing is not one crossmodal reproduces.\nFix: index with the local "
            "engine (leave out --engine ray)"
        )
    with store.writer_lock(config.wait):
        run = begin_run(root, store, encoder, config)
        staging = f"{store.db_dir}/{STAGING_DIR}"
        _remove_stale_staging(store, staging)
        if run.plan.todo:
            with _ray_session(ray_config):
                _encode_on_ray(run, store, recipe, config, ray_config, staging, on_progress)
        return run.finish(config)


STALE_STAGING = 6 * 3600.0  # seconds: a remote run's staging data this old is from a dead run


def _remove_stale_staging(store: Store, staging: str) -> None:
    """Remove what killed runs left in the staging folder. Locally the writer lock says no run
    is alive; on object storage another run may be, so only data older than STALE_STAGING goes."""
    if not store.remote:
        shutil.rmtree(staging, ignore_errors=True)
        return
    newest: dict[str, int] = {}
    for uri, _, mtime_ns in store.storage.list_files(staging):
        dataset = uri[len(staging) + 1 :].split("/", 1)[0]
        newest[dataset] = max(newest.get(dataset, 0), mtime_ns)
    for dataset, mtime_ns in newest.items():
        if time.time() - mtime_ns / 1e9 > STALE_STAGING:
            store.storage.remove_tree(f"{staging}/{dataset}")


def _encode_on_ray(
    run: Run,
    store: Store,
    recipe: PixelRecipe,
    config: IndexConfig,
    ray_config: RayConfig,
    staging: str,
    on_progress: Callable[[IndexProgress], None] | None,
) -> None:
    import ray.data
    from lance_ray import LanceFragmentWriter

    uri = f"{staging}/{uuid.uuid4().hex}.lance"
    options = store.storage_options
    files = {f.path: f for f in run.plan.todo}
    items = [
        {"path": f.path, "open_path": job.path, "known_hash": job.known_hash or ""}
        for f, job in zip(run.plan.todo, run.jobs(), strict=True)
    ]
    gpu = ray_config.gpus_per_actor > 0
    actor_config = EncoderConfig(
        device="cuda" if gpu else "cpu",
        precision=ray_config.precision,
        batch_size=config.batch_size,
        threads=None if gpu else max(1, int(ray_config.cpus_per_actor)),
    )
    blocks = max(1, min(len(items) // config.batch_size, 10_000))
    data: Any = ray.data.from_items(items, override_num_blocks=blocks)
    data = data.map_batches(
        _decode_batch,
        fn_kwargs={"recipe": recipe, "storage": store.storage},
        batch_size=config.batch_size,
        batch_format="numpy",
        num_cpus=ray_config.decode_cpus,
        # decoding spreads over every node; and as its arguments come from a function, Ray Data
        # keeps it a stage of its own instead of fusing it into the encoder actors
        ray_remote_args_fn=functools.partial(
            dict, num_cpus=ray_config.decode_cpus, scheduling_strategy="SPREAD"
        ),
    )
    data = data.map_batches(
        EncoderActor,
        fn_constructor_kwargs={
            "spec": run.encoder.identity.spec,
            "fingerprint": run.encoder.identity.fingerprint,
            "config": actor_config,
        },
        batch_size=config.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=ray_config.actors),
        num_cpus=0.5 if gpu else ray_config.cpus_per_actor,
        num_gpus=ray_config.gpus_per_actor if gpu else None,
    )
    data = data.map_batches(
        LanceFragmentWriter(
            uri, schema=STAGING_SCHEMA, data_storage_version="stable", storage_options=options
        ),
        batch_size=None,
        batch_format="pyarrow",
        num_cpus=0.25,
    )
    fragments: list[Any] = []
    done = 0

    def merge() -> None:
        nonlocal done
        done += _merge_shard(run, recipe, files, uri, fragments, options)
        fragments.clear()
        if on_progress:
            on_progress(IndexProgress(done, len(files), run.images_per_second()))

    try:
        for written in data.iter_batches(batch_size=None, batch_format="pyarrow"):
            fragments.extend(pickle.loads(b) for b in written.column("fragment").to_pylist())
            if sum(f.physical_rows for f in fragments) >= ray_config.shard_rows:
                merge()
        if fragments:
            merge()
        log.debug("Ray Data's account of the run:\n%s", data.stats())
    finally:
        if store.remote:
            store.storage.remove_tree(uri)
        else:
            shutil.rmtree(uri, ignore_errors=True)


def _merge_shard(
    run: Run,
    recipe: PixelRecipe,
    files: dict[str, Any],
    uri: str,
    fragments: list[Any],
    options: dict[str, str],
) -> int:
    """Commit one shard's fragments as the staging dataset, then merge it into the table."""
    import lance

    operation = lance.LanceOperation.Overwrite(STAGING_SCHEMA, fragments)
    staged = lance.LanceDataset.commit(uri, operation, storage_options=options).to_table()
    paths = staged.column("path").to_pylist()
    vectors = staged.column("vector")
    encoded: dict[str, np.ndarray] = {}
    results: list[Prepared] = []
    for i, row in enumerate(staged.drop_columns(["vector"]).to_pylist()):
        file = files[row["path"]]
        if vectors[i].is_valid:
            encoded[file.path] = np.asarray(vectors[i].values, np.float32)
        results.append(
            Prepared(
                file.open_path,
                row["content_hash"],
                None,
                row["width"],
                row["height"],
                row["format"],
                row["captured_at"],
                row["error"],
            )
        )
    run.commit([files[p] for p in paths], results, recipe, encoded)
    return len(paths)


STAGING_SCHEMA = pa.schema(
    [
        pa.field("path", pa.string(), nullable=False),
        pa.field("content_hash", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("format", pa.string()),
        pa.field("captured_at", pa.timestamp("us")),
        pa.field("error", pa.string()),  # why the file was not indexed; null when it was
        pa.field("vector", pa.list_(pa.float32())),  # null: failed, or its stored vector stands
    ]
)


def _decode_batch(
    batch: dict[str, np.ndarray], recipe: PixelRecipe, storage: ObjectStorage
) -> dict[str, np.ndarray]:
    """A Ray task: the project's own reader and decoder (EXIF orientation, draft decoding, one
    bad file reported, never raised) for a batch of files."""
    height, width = recipe.size
    count = len(batch["path"])
    pixels = np.zeros((count, height, width, 3), np.uint8)
    fields: dict[str, list[Any]] = {k: [] for k in ("hash", "w", "h", "format", "taken", "error")}
    encode = np.zeros(count, bool)
    for i, (open_path, known) in enumerate(
        zip(batch["open_path"], batch["known_hash"], strict=True)
    ):
        result = prepare(Job(str(open_path), str(known) or None), recipe, frozenset(), storage)
        if result.pixels is not None:
            pixels[i] = result.pixels
            encode[i] = True
        fields["hash"].append(result.content_hash)
        fields["w"].append(result.width)
        fields["h"].append(result.height)
        fields["format"].append(result.format)
        fields["taken"].append(_micros(result.captured_at))
        fields["error"].append(result.error or "")
    return {
        "path": batch["path"],
        "content_hash": np.array(fields["hash"], object),
        "width": np.array(fields["w"], np.int32),
        "height": np.array(fields["h"], np.int32),
        "format": np.array(fields["format"], object),
        "captured_us": np.array(fields["taken"], np.int64),
        "error": np.array(fields["error"], object),
        "encode": encode,
        "pixels": pixels,
    }


_NO_TIME = np.iinfo(np.int64).min


def _micros(moment: datetime | None) -> int:
    """A capture time as microseconds since the epoch, as Arrow stores a timestamp("us")."""
    if moment is None:
        return int(_NO_TIME)
    if moment.tzinfo is not None:  # Arrow keeps an aware time as its UTC wall clock
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return (moment - _EPOCH) // timedelta(microseconds=1)


_EPOCH = datetime(1970, 1, 1)


class EncoderActor:
    """A Ray actor: loads the model once, then encodes the pixels of each batch it is given."""

    def __init__(self, spec: str, fingerprint: str, config: EncoderConfig) -> None:
        from crossmodal.model.encoder import load_encoder

        self.encoder = load_encoder(spec, config)
        if self.encoder.identity.fingerprint != fingerprint:
            raise CrossmodalError(
                f"this worker's copy of {spec} has fingerprint {self.encoder.identity.fingerprint}"
                f", the driver's {fingerprint}: the nodes hold different weights.\nFix: give every "
                "node the same model files (or a pretrained tag, which downloads the same)"
            )

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        encode = batch["encode"].astype(bool)
        dim = self.encoder.dim
        vectors = np.zeros((len(encode), dim), np.float32)
        if encode.any():
            vectors[encode] = self.encoder.encode_pixels(batch["pixels"][encode])
        flat = pa.array(vectors.reshape(-1), pa.float32())
        offsets = pa.array(np.arange(0, (len(encode) + 1) * dim, dim, dtype=np.int32))
        mask = pa.array(~encode)
        column = pa.ListArray.from_arrays(offsets, flat, mask=mask)
        captured = batch["captured_us"].astype(np.int64)
        errors = [str(e) or None for e in batch["error"]]
        return pa.table(
            {
                "path": pa.array([str(p) for p in batch["path"]], pa.string()),
                "content_hash": pa.array([str(h) for h in batch["content_hash"]], pa.string()),
                "width": pa.array(batch["width"], pa.int32()),
                "height": pa.array(batch["height"], pa.int32()),
                "format": pa.array([str(f) for f in batch["format"]], pa.string()),
                "captured_at": pa.array(captured, pa.timestamp("us"), mask=captured == _NO_TIME),
                "error": pa.array(errors, pa.string()),
                "vector": column,
            },
            schema=STAGING_SCHEMA,
        )


@contextmanager
def _ray_session(config: RayConfig) -> Iterator[None]:
    """Use the caller's Ray if one is running; else join `config.address`, or start a local Ray
    sized so that the actors leave room for decoding. Stops what it started."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise CrossmodalError(f"the Ray engine is not installed.\n{RAY_EXTRA_HINT}") from exc
    started = False
    with warnings.catch_warnings():
        # Ray starts its processes with fork + exec, which LanceDB's fork check warns about
        warnings.filterwarnings("ignore", "lancedb fork support", RuntimeWarning)
        # the one way Ray 2.60 has to keep decoding out of the actors (see `_encode_on_ray`)
        warnings.filterwarnings("ignore", "`ray_remote_args_fn` is deprecated")
        if not ray.is_initialized():
            _start_ray(ray, config)
            started = True
        try:
            _check_resources(ray.cluster_resources(), config)
            context = ray.data.DataContext.get_current()
            context.enable_progress_bars = False  # the caller's progress callback reports shards
            yield
        finally:
            if started:
                ray.shutdown()


def quiet_ray_logs() -> None:
    """For a terminal: Ray Data's per-run INFO lines (plans, log paths) become warnings only."""
    import ray.data  # noqa: F401  (configures Ray Data's loggers, which this then adjusts)

    logging.getLogger("ray.data").setLevel(logging.WARNING)


def _start_ray(ray: Any, config: RayConfig) -> None:
    """Join the cluster at `config.address`, or start a local Ray (GPUs found by Ray itself) with
    enough CPU slots that the actors leave room for decoding and writing."""
    quiet: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
    if config.address:
        ray.init(address=config.address, **quiet)
    else:
        actor_cpus = 0.5 if config.gpus_per_actor else config.cpus_per_actor
        needed = config.actors * actor_cpus + config.decode_cpus + 0.25
        slots = max(os.cpu_count() or 1, int(np.ceil(needed)))
        ray.init(num_cpus=slots, include_dashboard=False, **quiet)


def _check_resources(resources: dict[str, float], config: RayConfig) -> None:
    gpus_needed = config.actors * config.gpus_per_actor
    if gpus_needed > resources.get("GPU", 0):
        raise CrossmodalError(
            f"{config.actors} actor(s) × {config.gpus_per_actor} GPU need {gpus_needed:g} GPUs; "
            f"the Ray cluster has {resources.get('GPU', 0):g}.\nFix: pass fewer --actors, or "
            "leave out --gpus-per-actor to encode on CPUs"
        )
    cpus_needed = (0 if config.gpus_per_actor else config.actors * config.cpus_per_actor) + (
        config.decode_cpus
    )
    if cpus_needed > resources.get("CPU", 0):
        raise CrossmodalError(
            f"{config.actors} actor(s) and a decoding task need {cpus_needed:g} CPUs; the Ray "
            f"cluster has {resources.get('CPU', 0):g}.\nFix: pass fewer --actors"
        )
