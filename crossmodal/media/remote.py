"""Photos on object storage (s3://, gs://, az://): listing, reading and removing, with the same
storage options LanceDB takes for a database there. files -> decode, for buckets.

Options are LanceDB's names (`aws_endpoint`, `aws_access_key_id`, `aws_secret_access_key`,
`aws_region`, `allow_http`); each falls back to the standard environment variable
(AWS_ENDPOINT_URL or AWS_ENDPOINT, AWS_ACCESS_KEY_ID, ...), which is what LanceDB reads too.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Mapping
from typing import Any

from crossmodal.errors import CrossmodalError

_URI = re.compile(r"^(s3|s3a|gs|gcs|az|abfs|abfss)://", re.IGNORECASE)

_ENV = {
    "aws_endpoint": ("AWS_ENDPOINT_URL", "AWS_ENDPOINT"),
    "aws_access_key_id": ("AWS_ACCESS_KEY_ID",),
    "aws_secret_access_key": ("AWS_SECRET_ACCESS_KEY",),
    "aws_session_token": ("AWS_SESSION_TOKEN",),
    "aws_region": ("AWS_REGION", "AWS_DEFAULT_REGION"),
    "allow_http": ("AWS_ALLOW_HTTP",),
}
_ALIASES = {
    "aws_endpoint_url": "aws_endpoint",
    "region": "aws_region",
    "aws_allow_http": "allow_http",
}


def is_uri(text: str | os.PathLike[str]) -> bool:
    """Whether `text` names a place on object storage rather than a local path."""
    return bool(_URI.match(str(text)))


def parse_storage_options(pairs: tuple[str, ...] | list[str]) -> dict[str, str]:
    """`KEY=VALUE` strings from the command line as a storage-options dict."""
    options: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise CrossmodalError(
                f"storage option {pair!r} is not KEY=VALUE, e.g. --storage-option "
                "aws_endpoint=http://127.0.0.1:9000"
            )
        options[key.strip()] = value
    return options


class ObjectStorage:
    """Reads, lists and removes objects under URIs, one client per bucket, made on first use.

    Picklable (it carries only its options), so Ray tasks get a copy and make their own clients.
    """

    def __init__(self, options: Mapping[str, str] | None = None) -> None:
        self.options = dict(options or {})
        self._clients: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"options": self.options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["options"])  # type: ignore[misc]

    def option(self, name: str) -> str | None:
        for key, value in self.options.items():
            if _ALIASES.get(key.lower(), key.lower()) == name:
                return value
        for variable in _ENV.get(name, ()):
            if os.environ.get(variable):
                return os.environ[variable]
        return None

    def _filesystem(self, uri: str) -> tuple[Any, str]:
        """The pyarrow filesystem for `uri`'s bucket, and the path inside it."""
        import pyarrow.fs as pafs

        scheme, _, rest = str(uri).partition("://")
        scheme = scheme.lower()
        bucket = rest.split("/", 1)[0]
        key = (scheme, bucket)
        with self._lock:
            if key not in self._clients:
                if scheme in ("s3", "s3a"):
                    endpoint = self.option("aws_endpoint")
                    http = (self.option("allow_http") or "").lower() in ("1", "true", "yes")
                    self._clients[key] = pafs.S3FileSystem(
                        access_key=self.option("aws_access_key_id"),
                        secret_key=self.option("aws_secret_access_key"),
                        session_token=self.option("aws_session_token"),
                        region=self.option("aws_region") or _bucket_region(bucket, endpoint),
                        endpoint_override=endpoint.split("://", 1)[-1] if endpoint else None,
                        scheme="http" if http or (endpoint or "").startswith("http:") else "https",
                    )
                else:  # Google Cloud Storage and Azure: credentials from their environment
                    self._clients[key] = pafs.FileSystem.from_uri(f"{scheme}://{bucket}")[0]
        return self._clients[key], rest.rstrip("/")

    def read(self, uri: str) -> bytes:
        filesystem, path = self._filesystem(uri)
        with filesystem.open_input_stream(path) as stream:
            data: bytes = stream.read()
        return data

    def write(self, uri: str, data: bytes) -> None:
        filesystem, path = self._filesystem(uri)
        with filesystem.open_output_stream(path) as stream:
            stream.write(data)

    def list_files(self, uri: str) -> list[tuple[str, int, int]]:
        """(uri, size, mtime_ns) of every object under `uri`, in key order."""
        import pyarrow.fs as pafs

        filesystem, path = self._filesystem(uri)
        scheme = str(uri).partition("://")[0]
        selector = pafs.FileSelector(path, recursive=True, allow_not_found=True)
        found = [
            (f"{scheme}://{info.path}", int(info.size or 0), int(info.mtime_ns or 0))
            for info in filesystem.get_file_info(selector)
            if info.type == pafs.FileType.File
        ]
        return sorted(found)

    def remove(self, uri: str) -> None:
        filesystem, path = self._filesystem(uri)
        filesystem.delete_file(path)

    def remove_tree(self, uri: str) -> None:
        """Delete everything under `uri`; nothing there is not an error."""
        filesystem, path = self._filesystem(uri)
        with contextlib.suppress(FileNotFoundError, OSError):
            filesystem.delete_dir(path)


def _bucket_region(bucket: str, endpoint: str | None) -> str:
    """The region of an AWS bucket when none was given (asked of S3 itself); a custom endpoint
    (MinIO, moto, Ceph) takes the default."""
    if endpoint:
        return "us-east-1"
    import pyarrow.fs as pafs

    try:
        return str(pafs.resolve_s3_region(bucket))
    except OSError:
        return "us-east-1"
