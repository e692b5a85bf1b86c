"""The kit's content-addressed blob store and its image checks."""

from __future__ import annotations

import hashlib
import os
import pathlib
import tempfile
import threading

import pytest

from citygrid.blobs import BlobNotFound, FilesystemBlobStore, ImageTooLarge, NotAnImage, sniff_image

JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 32 + b"\xff\xd9"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32 + b"\x00\x00\x00\x00IEND\xaeB`\x82"


def test_jpeg_and_png_are_recognised_by_their_bytes_not_their_name():
    assert sniff_image(JPEG, max_bytes=1000) == "image/jpeg"
    assert sniff_image(PNG, max_bytes=1000) == "image/png"


@pytest.mark.parametrize(
    "data",
    [b"", b"<?php echo 1; ?>", b"GIF89a" + b"\x00" * 10, JPEG[:-2], PNG[:-12]],
    ids=["empty", "script", "gif", "truncated-jpeg", "truncated-png"],
)
def test_anything_but_a_whole_jpeg_or_png_is_refused(data):
    with pytest.raises(NotAnImage):
        sniff_image(data, max_bytes=1000)


def test_an_image_over_the_limit_is_refused_with_413():
    with pytest.raises(ImageTooLarge) as error:
        sniff_image(JPEG, max_bytes=len(JPEG) - 1)
    assert error.value.status == 413


async def test_a_blob_is_stored_once_under_its_hash_and_read_back(tmp_path):
    store = FilesystemBlobStore(tmp_path)
    first = await store.put(JPEG, "image/jpeg")
    again = await store.put(JPEG, "image/jpeg")
    assert first == again
    assert first.sha256 == hashlib.sha256(JPEG).hexdigest()
    assert await store.get(first.sha256) == JPEG
    assert await store.exists(first.sha256)
    assert len([p for p in tmp_path.rglob("*") if p.is_file()]) == 1


@pytest.mark.parametrize("name", ["0" * 64, "../../etc/passwd", "ABC"])
async def test_an_unknown_or_malformed_name_is_not_found(tmp_path, name):
    store = FilesystemBlobStore(tmp_path)
    with pytest.raises(BlobNotFound):
        await store.get(name)


async def test_no_filesystem_call_or_hash_of_the_store_runs_on_the_event_loop(tmp_path, monkeypatch):
    """On a network filesystem a ``stat`` can take as long as a request: every call is in a thread."""
    loop_thread = threading.get_ident()
    calls: list[tuple[str, int]] = []

    def spy(owner, name):
        original = getattr(owner, name)

        def recorded(*args, **kwargs):
            calls.append((name, threading.get_ident()))
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, recorded)

    for owner, name in [
        (pathlib.Path, "exists"),
        (pathlib.Path, "mkdir"),
        (pathlib.Path, "read_bytes"),
        (tempfile, "mkstemp"),
        (os, "fsync"),
        (os, "replace"),
        (hashlib, "sha256"),
    ]:
        spy(owner, name)
    store = FilesystemBlobStore(tmp_path)
    stored = await store.put(JPEG, "image/jpeg")
    await store.put(JPEG, "image/jpeg")  # there already: a stat, no write
    assert await store.exists(stored.sha256)
    assert await store.get(stored.sha256) == JPEG
    called = {name for name, _ in calls}
    assert called >= {"exists", "mkdir", "read_bytes", "mkstemp", "fsync", "replace", "sha256"}
    assert [name for name, thread in calls if thread == loop_thread] == []
