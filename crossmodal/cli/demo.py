"""`crossmodal demo`: load the model once, then serve the Gradio app in `demo/` over one database."""

from __future__ import annotations

import importlib
import ipaddress
import signal
import tempfile
from pathlib import Path
from types import ModuleType

import click

from crossmodal.cli.options import (
    choose_model,
    db_option,
    err,
    friendly_errors,
    json_option,
    load_query_encoder,
    model_options,
    print_json,
)
from crossmodal.errors import CrossmodalError, StoreError
from crossmodal.store import Store


@click.command()
@db_option
@model_options
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. Anything but a loopback address lets other machines connect.",
)
@click.option("--port", type=int, default=None, help="Port (default: the first free from 7860).")
@click.option("--share", is_flag=True, help="Also open a public gradio.live link (off by default).")
@click.option(
    "--allow-indexing/--no-allow-indexing",
    default=None,
    help="Offer an 'Index a folder' tab. Default: on when only this machine can connect.",
)
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    help="Another host name requests may be addressed to (a reverse proxy's); repeatable. "
    "Requests naming any other host are refused.",
)
@click.option("--open", "open_browser", is_flag=True, help="Open the page in a web browser.")
@json_option
@friendly_errors
def demo(
    db_dir: Path,
    model_spec: str | None,
    device: str,
    precision: str,
    batch_size: int,
    host: str,
    port: int | None,
    share: bool,
    allow_indexing: bool | None,
    allowed_hosts: tuple[str, ...],
    open_browser: bool,
    as_json: bool,
) -> None:
    """Open the search app in a web browser: words → photos, photo → photos, photo → labels."""
    app = app_module()  # before the model: a missing gradio is reported in a second, not a minute
    try:
        store: Store | None = Store.open(db_dir)
    except StoreError:
        store = None  # the page opens anyway and says how to build the index
    encoder = load_query_encoder(choose_model(store, model_spec), device, precision, batch_size)
    if allow_indexing is None:
        allow_indexing = is_loopback(host) and not share
    # `kill` then stops the server like Ctrl-C does, so the private folder is removed too
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with tempfile.TemporaryDirectory(prefix="crossmodal-demo-") as workdir:
            service = app.DemoService(db_dir, encoder, Path(workdir))
            err.print(f"model {encoder.identity.spec} on {encoder.device} ({encoder.precision})")

            def ready(url: str) -> None:
                if as_json:  # one line a script can read to find the page
                    print_json({"url": url, "db": str(db_dir), "model": encoder.identity.spec})

            app.launch(
                service,
                host=host,
                port=port,
                share=share,
                allow_indexing=allow_indexing,
                open_browser=open_browser,
                on_ready=ready,
                extra_hosts=allowed_hosts,
            )
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def app_module() -> ModuleType:
    """The Gradio app: `crossmodal_demo` when installed, `demo` in a source checkout."""
    try:
        import gradio  # noqa: F401
    except ImportError as exc:
        raise CrossmodalError(
            "the demo needs Gradio, which is not installed.\nFix: pip install 'crossmodal[demo]'"
        ) from exc
    try:
        return importlib.import_module("crossmodal_demo.app")
    except ModuleNotFoundError:
        return importlib.import_module("demo.app")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


COMMANDS = (demo,)
