"""The Gradio app: widgets wired to `service.DemoService` next to it, nothing else.

Every answer comes from the service; this module only turns widget values into its arguments
and its results into widget values, and shows its typed errors as messages.
"""

from __future__ import annotations

import functools
import html
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import gradio as gr
from starlette.middleware import Middleware

from crossmodal.errors import CrossmodalError
from crossmodal.indexing import IndexProgress

from .hosts import HostGuard, allowed_hosts
from .service import (
    MAX_RESULTS,
    MAX_UPLOAD_BYTES,
    TYPED,
    DemoService,
    GalleryItem,
    Results,
    index_summary,
    label_chart,
    search_options,
)

F = TypeVar("F", bound=Callable[..., Any])
EXTRA_TERMS = 3  # rows of "and also / but not" terms under the text query
MAX_QUEUE = 64  # requests waiting for a worker; more are refused with "queue is full"
MAX_SESSIONS = 1_000  # browser sessions whose state is kept (Gradio's default: 10,000)
ALL_FOLDERS = ""

CSS = """
#status { font-size: 0.9em; }
#summary { min-height: 1.5em; }
footer { display: none !important; }
"""


def friendly(func: F) -> F:
    """Show crossmodal's typed errors as a readable message box instead of a generic failure."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except CrossmodalError as exc:
            # gr.Error renders HTML: escape, so a file name can never inject markup
            message = html.escape(str(exc)).replace("\n", "<br>")
            raise gr.Error(message, title="Cannot do that", print_exception=False) from exc

    return wrapper  # type: ignore[return-value]


def photo_input(**options: Any) -> gr.Image:
    """An image upload whose unreadable files reach the service, which says what is wrong.

    gr.Image opens every upload with Pillow before the handler runs and fails with a bare
    "Error" on a corrupt or mislabelled file; this one passes the uploaded file on instead.
    (Set on the instance: a gr.Image subclass would make Gradio write a .pyi file next to
    this module on import.)
    """
    image = gr.Image(type="filepath", sources=["upload", "clipboard"], **options)
    strict = image.preprocess

    def preprocess(payload: Any) -> Any:
        try:
            return strict(payload)
        except (OSError, ValueError, SyntaxError):  # Pillow's "cannot identify", truncation
            return payload.path

    image.preprocess = preprocess  # type: ignore[method-assign]
    return image


def build(service: DemoService, *, allow_indexing: bool = False) -> gr.Blocks:
    """The demo page. `allow_indexing` adds a tab that indexes a folder of this machine."""

    def shown(results: Results) -> tuple[Any, ...]:
        gallery = [(item.thumbnail, item.caption) for item in results.items]
        return gallery, results.summary, results.items, None, None, "", gr.update(visible=False)

    @friendly
    def search_text(query: str | None, *values: Any) -> tuple[Any, ...]:
        pairs = values[: 2 * EXTRA_TERMS]
        texts, weights = pairs[::2], pairs[1::2]
        terms = [(text or "", float(w)) for text, w in zip(texts, weights, strict=True)]
        options = search_options(*values[2 * EXTRA_TERMS :])
        return shown(service.search_text(query or "", options, terms))

    @friendly
    def search_image(upload: str | None, *values: Any) -> tuple[Any, ...]:
        return shown(service.search_image(upload, search_options(*values)))

    @friendly
    def more_like(selected: GalleryItem | None, *values: Any) -> tuple[Any, ...]:
        if selected is None:
            raise CrossmodalError("pick a photo in the results first")
        return shown(service.more_like(selected.hit.path, search_options(*values)))

    @friendly
    def select(items: tuple[GalleryItem, ...], event: gr.SelectData) -> tuple[Any, ...]:
        item = items[event.index]
        details = service.details(item)
        return item, details.preview, details.markdown(), gr.update(visible=True)

    @friendly
    def labels(upload: str | None, source: str, typed: str) -> dict[str, float]:
        return label_chart(service.labels(upload, source, typed))

    def refresh() -> tuple[Any, ...]:
        folders = [("All folders", ALL_FOLDERS), *service.folders()]
        sources = service.text_sources()
        return (
            service.status().markdown(),
            gr.update(choices=folders),
            gr.update(choices=sources, value=sources[-1] if len(sources) > 1 else TYPED),
        )

    # uploads older than an hour are deleted every 10 minutes: the work folder cannot fill up
    with gr.Blocks(
        title="crossmodal photo search", analytics_enabled=False, delete_cache=(600, 3600)
    ) as app:
        gr.Markdown("# crossmodal · search your photos by words or by example")
        status = gr.Markdown(elem_id="status")
        selected = gr.State(None)
        items = gr.State(())

        with gr.Tabs():
            with gr.Tab("Words → photos", id="text"):
                with gr.Row(equal_height=True):
                    query = gr.Textbox(
                        label="Describe the photo",
                        placeholder="a dog running on the beach at sunset",
                        scale=5,
                        elem_id="query",
                    )
                    text_button = gr.Button("Search", variant="primary", scale=1)
                with gr.Accordion("Combine with more terms (weights below 0 subtract)", open=False):
                    extra: list[gr.components.Component] = []
                    for i in range(EXTRA_TERMS):
                        with gr.Row():
                            extra.append(
                                gr.Textbox(
                                    show_label=False,
                                    placeholder=["golden light", "people", "snow"][i],
                                    scale=3,
                                )
                            )
                            extra.append(
                                gr.Slider(
                                    -2, 2, value=[0.5, -0.5, 0.0][i], step=0.1, label="weight"
                                )
                            )
            with gr.Tab("Photo → photos", id="image"), gr.Row():
                upload = photo_input(
                    label="Drop or paste a photo",
                    height=260,
                    elem_id="upload",
                )
                with gr.Column():
                    gr.Markdown(
                        "Photos that look like yours, best first. "
                        f"Up to {MAX_UPLOAD_BYTES // 2**20} MB; the photo stays on this machine."
                    )
                    image_button = gr.Button("Find similar photos", variant="primary")
            with gr.Tab("Photo → labels", id="labels"), gr.Row():
                with gr.Column():
                    label_upload = photo_input(
                        label="Drop or paste a photo",
                        height=260,
                        elem_id="label-upload",
                    )
                    # every source known now, so an API client that never loaded the page (and
                    # its refresh) may name one; a table added later is accepted too
                    source = gr.Dropdown(
                        service.text_sources(),
                        value=TYPED,
                        label="Labels from",
                        allow_custom_value=True,
                    )
                    typed = gr.Textbox(
                        label="Your labels (comma or one per line)",
                        placeholder="a dog, a cat, a beach at sunset, a city at night",
                        lines=2,
                        elem_id="typed-labels",
                    )
                    label_button = gr.Button("What does it show?", variant="primary")
                chart = gr.Label(num_top_classes=10, label="Probability", elem_id="chart")
            if allow_indexing:
                with gr.Tab("Index a folder", id="index"):
                    folder_box = gr.Textbox(
                        label="Folder on this machine", placeholder="~/Pictures"
                    )
                    index_button = gr.Button("Index", variant="primary")
                    index_report = gr.Markdown()

        with gr.Accordion("Filters", open=True), gr.Row():
            k = gr.Slider(1, MAX_RESULTS, value=24, step=1, label="Results")
            min_score = gr.Slider(0, 1, value=0, step=0.01, label="Minimum score")
            folder = gr.Dropdown(
                [("All folders", ALL_FOLDERS)],
                value=ALL_FOLDERS,
                label="Folder",
                allow_custom_value=True,  # a folder path or name typed by an API client
            )
            taken_from = gr.Textbox(label="Taken from", placeholder="2019-06-01")
            taken_until = gr.Textbox(label="Taken until", placeholder="2019-08-31")
            page = gr.Number(1, minimum=1, precision=0, label="Page", elem_id="page")
        filter_inputs = [k, min_score, folder, taken_from, taken_until, page]

        summary = gr.Markdown(elem_id="summary")
        with gr.Row():
            gallery = gr.Gallery(
                label="Results",
                columns=5,
                height="auto",
                object_fit="cover",
                allow_preview=False,
                interactive=False,
                buttons=["fullscreen"],
                elem_id="gallery",
                scale=3,
            )
            with gr.Column(scale=1, min_width=280):
                preview = gr.Image(
                    label="Selected photo",
                    interactive=False,
                    height=300,
                    buttons=["download", "fullscreen"],
                    elem_id="preview",
                )
                details = gr.Markdown("Click a photo to see it large.", elem_id="details")
                like_button = gr.Button("More like this", variant="secondary", visible=False)

        results_out = [gallery, summary, items, selected, preview, details, like_button]
        text_inputs = [query, *extra, *filter_inputs]
        text_button.click(search_text, text_inputs, results_out)
        query.submit(search_text, text_inputs, results_out)
        image_button.click(search_image, [upload, *filter_inputs], results_out)
        upload.upload(search_image, [upload, *filter_inputs], results_out)
        gallery.select(select, [items], [selected, preview, details, like_button])
        like_button.click(more_like, [selected, *filter_inputs], results_out)
        label_button.click(labels, [label_upload, source, typed], [chart])
        label_upload.upload(labels, [label_upload, source, typed], [chart])
        app.load(refresh, None, [status, folder, source])

        if allow_indexing:

            @friendly
            def index(path: str, progress: gr.Progress = gr.Progress()) -> str:  # noqa: B008
                def on_progress(event: IndexProgress) -> None:
                    progress((event.done, event.total), desc=f"{event.images_per_second:.1f} img/s")

                return index_summary(service.index(path, on_progress))

            index_button.click(index, [folder_box], [index_report]).then(
                refresh, None, [status, folder, source]
            )
    return app


def launch(
    service: DemoService,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    share: bool = False,
    allow_indexing: bool = False,
    open_browser: bool = False,
    on_ready: Callable[[str], None] | None = None,
    extra_hosts: Sequence[str] = (),
) -> None:
    """Serve the demo until interrupted; `on_ready` gets the page's address once it answers.

    Requests must be addressed to the host it listens on (and, for loopback, its other loopback
    names) or to one of `extra_hosts` (a reverse proxy's name): see `hosts.py`.

    Gradio serves files only from its upload folder and the folders in `allowed_paths`. Its
    upload folder is pointed at the service's private work folder and `allowed_paths` stays
    empty, so the browser can fetch uploads and thumbnails, never a photo or any other file.
    """
    workdir = service.workdir.resolve()
    os.environ["GRADIO_TEMP_DIR"] = str(workdir)  # read when the app is built and launched
    os.environ["GRADIO_EXAMPLES_CACHE"] = str(workdir / "examples")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    app = build(service, allow_indexing=allow_indexing)
    # a burst beyond the queue gets Gradio's "queue is full" at once instead of a long wait
    app.queue(default_concurrency_limit=2, max_size=MAX_QUEUE)
    allowed = None if share else allowed_hosts(host, extra_hosts)  # a share link has its own name
    guard = [Middleware(HostGuard, allowed=allowed)] if allowed is not None else []
    app.launch(
        app_kwargs={"middleware": guard},
        server_name=host,
        server_port=port,
        share=share,
        inbrowser=open_browser,
        allowed_paths=[],
        max_file_size=MAX_UPLOAD_BYTES,
        show_error=False,
        ssr_mode=False,
        footer_links=[],
        favicon_path=None,
        css=CSS,
        theme=gr.themes.Soft(),
        prevent_thread_lock=True,
        # sessions beyond this are forgotten, oldest first: memory stays bounded on a long run
        state_session_capacity=MAX_SESSIONS,
    )
    if allowed is not None:
        # outermost as well, so that Gradio's CORS layer never echoes a refused origin; the inner
        # guard covers the moments before this line
        server = app.server_app
        server.middleware_stack = HostGuard(
            server.middleware_stack or server.build_middleware_stack(), allowed=allowed
        )
    if on_ready is not None:
        on_ready(str(app.local_url))
    app.block_thread()
