"""Shared test fixtures: a deterministic colour encoder, image factories, a tiny real model."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crossmodal.model.specs import ModelIdentity

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 200, 30),
    "blue": (30, 30, 220),
    "yellow": (230, 230, 20),
    "cyan": (20, 220, 220),
    "magenta": (220, 20, 220),
    "white": (250, 250, 250),
    "black": (5, 5, 5),
}
NAMES = list(COLOURS)


class ColourEncoder:
    """An exact stand-in for CLIP: images map to the one-hot of their nearest named colour
    (by mean pixel), texts to the normalised sum of the colour words they contain.

    A text without a colour word maps to the extra last dimension, which no image has.
    """

    device = "cpu"
    precision = "fp32"
    logit_scale = 100.0

    def __init__(self, name: str = "fake-colours") -> None:
        self.identity = ModelIdentity(name, name, len(NAMES) + 1, "fake")
        self.images_encoded = 0

    @property
    def dim(self) -> int:
        return self.identity.dim

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        out = np.zeros((len(images), self.dim), np.float32)
        palette = np.array(list(COLOURS.values()), np.float64)
        for i, image in enumerate(images):
            mean = np.asarray(image.convert("RGB"), np.float64).reshape(-1, 3).mean(axis=0)
            out[i, int(np.argmin(((palette - mean) ** 2).sum(axis=1)))] = 1.0
        self.images_encoded += len(images)
        return out

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, text in enumerate(texts):
            words = text.lower().replace(",", " ").replace(".", " ").split()
            for word in words:
                if word in COLOURS:
                    out[i, NAMES.index(word)] += 1.0
            if not out[i].any():
                out[i, -1] = 1.0
        return out / np.linalg.norm(out, axis=1, keepdims=True)


@pytest.fixture
def encoder() -> ColourEncoder:
    return ColourEncoder()


def make_image(
    path: Path,
    colour: str,
    size: tuple[int, int] = (48, 32),
    fmt: str | None = None,
    **save_args: object,
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, COLOURS[colour]).save(path, format=fmt, **save_args)
    return path


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """A folder of six plain-colour photos in nested folders and mixed formats."""
    root = tmp_path / "photos"
    make_image(root / "red.jpg", "red")
    make_image(root / "green.png", "green")
    make_image(root / "blue.webp", "blue")
    make_image(root / "trips" / "yellow.jpg", "yellow")
    make_image(root / "trips" / "2019" / "cyan.png", "cyan")
    make_image(root / "trips" / "2019" / "black.gif", "black")
    return root


TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Digests and text exports go to a cache of the run's own, never the user's (the CLI
    subprocesses the tests start inherit it)."""
    from crossmodal.model.cache import CACHE_ENV_VAR

    saved = os.environ.get(CACHE_ENV_VAR)
    os.environ[CACHE_ENV_VAR] = str(tmp_path_factory.mktemp("cache"))
    yield Path(os.environ[CACHE_ENV_VAR])
    if saved is None:
        del os.environ[CACHE_ENV_VAR]
    else:
        os.environ[CACHE_ENV_VAR] = saved


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight open_clip model in open_clip's local directory format."""
    from crossmodal.model.encoder import create_model_from_config, save_model_dir

    path = tmp_path_factory.mktemp("models") / "tiny"
    return save_model_dir(create_model_from_config(TINY_CONFIG, seed=0), TINY_CONFIG, path)


# Figures the reliability tests record; printed at the end of every run (see issue 7).
RELIABILITY: dict[str, str] = {}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if RELIABILITY:
        terminalreporter.section("reliability summary")
        for name, value in RELIABILITY.items():
            terminalreporter.write_line(f"{name}: {value}")


@dataclass(frozen=True)
class S3:
    """A real S3-compatible server (moto's) on loopback, with one bucket, "photos"."""

    endpoint: str
    options: dict[str, str]  # LanceDB's storage options for it
    env: dict[str, str]  # the same as the standard environment variables, for subprocesses


@pytest.fixture(scope="session")
def s3() -> Iterator[S3]:
    moto_server = pytest.importorskip("moto.server", reason="the loopback S3 server: moto")
    import boto3

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    ).create_bucket(Bucket="photos")
    options = {
        "aws_endpoint": endpoint,
        "aws_access_key_id": "test",
        "aws_secret_access_key": "test",
        "aws_region": "us-east-1",
        "allow_http": "true",
    }
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ENDPOINT": endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1",
        "AWS_ALLOW_HTTP": "true",
    }
    yield S3(endpoint, options, env)
    server.stop()


def cli_in_fresh_process(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the CLI as `python -m crossmodal` would, in a new interpreter; its stderr ends with
    "torch imported: BOOL pandas imported: BOOL", what the process had loaded by its exit."""
    code = (
        "import atexit, runpy, sys\n"
        "atexit.register(lambda: print('torch imported:', 'torch' in sys.modules, "
        "'pandas imported:', 'pandas' in sys.modules, file=sys.stderr))\n"
        f"sys.argv = ['crossmodal', *{list(args)!r}]\n"
        "runpy.run_module('crossmodal', run_name='__main__')\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )
