"""Where backups and archives go: a local directory or `s3://bucket/prefix` on any S3-compatible
store. S3 settings come from the standard environment variables (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_REGION, and AWS_ENDPOINT_URL for a store other than AWS)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from pyarrow import fs


class LocationError(ValueError):
    """A destination that cannot be used, phrased for the operator."""


@dataclass(frozen=True)
class Location:
    """A folder on a file system: `path` is what that file system calls it."""

    url: str
    filesystem: fs.FileSystem
    path: str

    @property
    def is_s3(self) -> bool:
        return self.url.startswith("s3://")

    def child(self, *parts: str) -> Location:
        joined = "/".join([self.path.rstrip("/"), *parts])
        return Location("/".join([self.url.rstrip("/"), *parts]), self.filesystem, joined)

    def write_bytes(self, name: str, data: bytes) -> None:
        target = self.child(name)
        self.filesystem.create_dir(target.path.rsplit("/", 1)[0], recursive=True)
        with self.filesystem.open_output_stream(target.path) as out:
            out.write(data)

    def read_bytes(self, name: str) -> bytes:
        try:
            with self.filesystem.open_input_stream(self.child(name).path) as source:
                return bytes(source.read())
        except (FileNotFoundError, OSError) as exc:
            raise LocationError(f"{self.child(name).url}: cannot be read ({exc})") from exc

    def s3_url(self) -> str:
        """The HTTP(S) URL ClickHouse's S3 functions take for this folder."""
        endpoint = os.environ.get("AWS_ENDPOINT_URL", "").rstrip("/")
        if not endpoint:
            region = os.environ.get("AWS_REGION", "us-east-1")
            endpoint = f"https://s3.{region}.amazonaws.com"
        return f"{endpoint}/{self.path}"


def location(url: str) -> Location:
    """`s3://bucket/prefix` or a local directory (created when written to)."""
    if not url.strip():  # Path("") is the current folder: a missing argument would write there
        raise LocationError(f"{url!r}: expected a folder or s3://bucket/prefix, not an empty path")
    if url.startswith("s3://"):
        parts = urlsplit(url)
        if not parts.netloc:
            raise LocationError(f"{url}: expected s3://bucket/prefix")
        endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
        options: dict[str, object] = {"region": os.environ.get("AWS_REGION", "us-east-1")}
        if endpoint:
            scheme, _, host = endpoint.partition("://")
            options |= {"endpoint_override": host, "scheme": scheme}
        # Credentials are read from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY by the S3 client itself.
        return Location(url.rstrip("/"), fs.S3FileSystem(**options), f"{parts.netloc}{parts.path}".rstrip("/"))
    if "://" in url:
        raise LocationError(f"{url}: expected a local directory or s3://bucket/prefix")
    path = Path(url).resolve()
    return Location(str(path), fs.LocalFileSystem(), str(path))
