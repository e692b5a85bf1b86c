"""Content-addressed storage of uploaded images (photos, snapshots) behind a small interface.

A blob is named by the SHA-256 of its bytes, so an upload retried or sent twice is stored once and
a reference in a record can never point at changed content. The filesystem store serves
development and single-node deployments; an object store implements the same three methods.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from citygrid.errors import DomainError, InvalidInput, NotFound

IMAGE_TYPES = {"image/jpeg": b"\xff\xd8\xff", "image/png": b"\x89PNG\r\n\x1a\n"}


class ImageTooLarge(DomainError):
    code = "blob.too_large"
    status = 413
    title = "Image too large"


class NotAnImage(InvalidInput):
    code = "blob.not_an_image"
    title = "Not an image"


class BlobNotFound(NotFound):
    code = "blob.not_found"


@dataclass(frozen=True)
class StoredBlob:
    sha256: str
    content_type: str
    size_bytes: int


def sniff_image(data: bytes, *, max_bytes: int) -> str:
    """The image's real content type (JPEG or PNG, from its magic bytes), or the reason it is refused.

    The declared content type of an upload is never trusted: a script renamed ``.jpg`` is refused.
    """
    if len(data) > max_bytes:
        raise ImageTooLarge(f"the image has {len(data)} bytes; the limit is {max_bytes}", limit=max_bytes)
    if not data:
        raise NotAnImage("the upload is empty")
    for content_type, magic in IMAGE_TYPES.items():
        if data.startswith(magic):
            if content_type == "image/jpeg" and not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
                raise NotAnImage("the JPEG is truncated (no end-of-image marker)")
            if content_type == "image/png" and b"IEND" not in data[-16:]:
                raise NotAnImage("the PNG is truncated (no IEND chunk)")
            return content_type
    raise NotAnImage("only JPEG and PNG images are accepted")


class BlobStore(Protocol):
    async def put(self, data: bytes, content_type: str) -> StoredBlob: ...

    async def get(self, sha256: str) -> bytes: ...

    async def exists(self, sha256: str) -> bool: ...


class FilesystemBlobStore:
    """Blobs under ``root/ab/cd/<sha256>``; written to a temporary file and renamed, so a reader
    never sees half a blob and two writers of the same content both succeed.

    Every filesystem call (``stat``, write, ``fsync``, read) and the hash run in a worker thread,
    never on the event loop: on a network filesystem one ``stat`` can take as long as a request.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise BlobNotFound(f"no blob {sha256[:80]}")
        return self.root / sha256[:2] / sha256[2:4] / sha256

    async def put(self, data: bytes, content_type: str) -> StoredBlob:
        sha256 = await asyncio.to_thread(self._store, data)
        return StoredBlob(sha256=sha256, content_type=content_type, size_bytes=len(data))

    def _store(self, data: bytes) -> str:
        """(thread) Hash the bytes and write them under their hash unless they are there already."""
        sha256 = hashlib.sha256(data).hexdigest()
        path = self._path(sha256)
        if not path.exists():
            self._write(path, data)
        return sha256

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        # The rename is durable once its directory is: a record naming the blob must not outlive it.
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    async def get(self, sha256: str) -> bytes:
        path = self._path(sha256)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise BlobNotFound(f"no blob {sha256}") from None

    async def exists(self, sha256: str) -> bool:
        return await asyncio.to_thread(self._path(sha256).exists)
