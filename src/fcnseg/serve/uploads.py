"""Uploads: the request body under its limits, then the image in it, read as
``fcnseg predict`` reads a file.

Every problem with the input is a :class:`Rejected` with a 4xx status and one line
naming it, never a server error.
"""

from __future__ import annotations

import re
import sys
import tempfile
from collections.abc import AsyncIterator

import anyio
import numpy as np
import python_multipart  # noqa: F401 (starlette parses multipart with it: its absence shows at start)
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request

from fcnseg.data.images import open_image, read_image

RAW_BODY = "the request body"
"""How errors name an image sent as the raw body (a multipart upload: its file name)."""


class Rejected(Exception):
    """A request refused because of its input: ``status`` and a one-line ``message``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


async def read_upload(request: Request, max_bytes: int, timeout_s: float) -> tuple[bytes, str]:
    """The image's bytes and its name for messages: the raw body, or the one file
    part of a ``multipart/form-data`` body.

    Raises:
        Rejected: 413 over ``max_bytes`` (declared or read), 408 not sent within
            ``timeout_s``, 400 empty, malformed multipart, or no file part.
    """
    body = _limited(request, max_bytes)
    try:
        with anyio.fail_after(timeout_s):
            if request.headers.get("content-type", "").startswith("multipart/form-data"):
                return await _file_part(request, body)
            data = b"".join([chunk async for chunk in body])
    except TimeoutError:
        raise Rejected(408, f"the body was not sent within {timeout_s:g} s") from None
    except ClientDisconnect:
        raise Rejected(400, "the client closed the connection before the body ended") from None
    if not data:
        raise Rejected(400, "empty body: send an image as the body or as a multipart file")
    return data, RAW_BODY


async def _limited(request: Request, max_bytes: int) -> AsyncIterator[bytes]:
    """The body's chunks; :class:`Rejected` (413) once it is over ``max_bytes``,
    before reading anything if its ``Content-Length`` says so."""
    declared = request.headers.get("content-length", "")
    too_big = Rejected(413, f"the body is over this server's limit of {max_bytes:,} bytes")
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_big
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise too_big
        yield chunk


async def _file_part(request: Request, body: AsyncIterator[bytes]) -> tuple[bytes, str]:
    parser = MultiPartParser(request.headers, body, max_files=1, max_fields=16)
    try:
        form = await parser.parse()
    except MultiPartException as e:
        raise Rejected(400, f"malformed multipart body: {e.message}") from None
    try:
        files = [v for v in form.values() if isinstance(v, UploadFile)]
        if not files:
            raise Rejected(400, "the multipart body has no file part (curl: -F image=@photo.jpg)")
        data = await files[0].read()
        if not data:
            raise Rejected(400, f"{_printable(files[0].filename)}: empty file")
        return data, _printable(files[0].filename)
    finally:
        await form.close()


def _printable(filename: str | None) -> str:
    """A client's file name, safe in a one-line message."""
    name = re.sub(r"[\x00-\x1f\x7f]", "?", filename or "")[:100]
    return name or "the uploaded file"


def decode_image(data: bytes, name: str, max_pixels: int) -> np.ndarray:
    """An uploaded image as (H, W, 3) uint8 RGB, upright by its EXIF orientation:
    :func:`fcnseg.data.images.read_image` on the bytes, as ``fcnseg predict`` reads files.

    The bytes go to a temporary file so that the header is read, and its size
    checked, by the same code as a file's (:func:`~fcnseg.data.images.open_image`).

    Raises:
        Rejected: 415 not an image Pillow reads, 413 over ``max_pixels`` (from the
            header, nothing decoded), 400 the pixel data cannot be decoded (truncated).
    """
    with tempfile.NamedTemporaryFile(prefix="fcnseg-upload-") as f:
        f.write(data)
        f.flush()
        try:  # the header only: what the image is and its size
            with open_image(f.name, max_pixels=sys.maxsize) as header:
                width, height = header.size
        except MemoryError:
            raise
        # Pillow's readers raise many kinds of error on hostile headers: each one
        # means this upload is not an image fcnseg can read.
        except Exception as e:
            raise Rejected(415, f"{_reason(e, f.name, name)}; send PNG, JPEG, ...") from None
        if width * height > max_pixels:
            raise Rejected(
                413,
                f"{name}: {width}x{height} pixels ({width * height:,}) is over this "
                f"server's limit of {max_pixels:,}",
            )
        try:
            return read_image(f.name, max_pixels=max_pixels)
        except MemoryError:
            raise
        except Exception as e:  # as above, for the pixel data (and its EXIF)
            raise Rejected(400, _reason(e, f.name, name)) from None


def _reason(error: Exception, path: str, name: str) -> str:
    """``error`` as one line about the upload ``name`` rather than the file at ``path``."""
    text = str(error).replace(path, name).replace("\n", " ")
    return text if text.startswith(name) else f"{name}: cannot read the image ({text})"
