"""Uploaded images: the format decided by content, the size read from the header before any
decoding, then the first frame decoded.

Each check maps to one HTTP status so the service can answer precisely: a format other than
JPEG / PNG / WEBP is 415, a header claiming more pixels than the limit is 413 (a decompression
bomb never reaches a decoder: some decoders allocate the whole canvas when they open the file,
before Pillow's own bomb check runs), a truncated or corrupt file is 400."""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from keyreid.data.images import open_image, to_rgb
from keyreid.errors import ImageTooLarge, KeyreidError


class UploadError(KeyreidError):
    """An upload the service refuses: `status` is the HTTP code, `reason` the metrics label."""

    def __init__(self, status: int, reason: str, message: str):
        self.status = status
        self.reason = reason
        super().__init__(message)


FORMATS = ("JPEG", "PNG", "WEBP")
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_JPEG_STANDALONE = {0x01, 0xD8, *range(0xD0, 0xD8)}


def sniff_format(data: bytes) -> str | None:
    """"JPEG", "PNG" or "WEBP" from the magic bytes, None for anything else."""
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def _corrupt(what: str) -> UploadError:
    return UploadError(400, "bad_image", f"the image is truncated or corrupt ({what})")


def _png_size(data: bytes) -> tuple[int, int]:
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise _corrupt("PNG without an IHDR header")
    return struct.unpack(">II", data[16:24])


def _jpeg_size(data: bytes) -> tuple[int, int]:
    i, n = 2, len(data)
    while i < n:
        if data[i] != 0xFF:
            raise _corrupt("JPEG marker expected")
        while i < n and data[i] == 0xFF:  # fill bytes
            i += 1
        if i >= n:
            break
        marker = data[i]
        i += 1
        if marker in _JPEG_STANDALONE:
            continue
        if marker == 0xD9 or i + 2 > n:
            break
        length = struct.unpack(">H", data[i:i + 2])[0]
        if marker in _JPEG_SOF:
            if i + 7 > n:
                break
            height, width = struct.unpack(">HH", data[i + 3:i + 7])
            return width, height
        i += length
    raise _corrupt("JPEG without a frame header")


def _webp_size(data: bytes) -> tuple[int, int]:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = struct.unpack("<I", data[21:25])[0]
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        w = int.from_bytes(data[24:27], "little") + 1
        h = int.from_bytes(data[27:30], "little") + 1
        return w, h
    raise _corrupt("WEBP without a VP8/VP8L/VP8X header")


def header_size(data: bytes, fmt: str) -> tuple[int, int]:
    """(width, height) as the file's header claims it, without decoding anything."""
    return {"PNG": _png_size, "JPEG": _jpeg_size, "WEBP": _webp_size}[fmt](data)


@dataclass
class DecodedImage:
    image: Image.Image   # RGB, first frame, EXIF orientation applied
    format: str
    frames: int          # frames in the file; only the first is used


def decode_upload(data: bytes, max_pixels: int) -> DecodedImage:
    """The RGB image in `data`, or UploadError (415 format, 413 too many pixels, 400 corrupt)."""
    if not data:
        raise UploadError(400, "bad_image", "the upload is empty: send a JPEG, PNG or WEBP image")
    fmt = sniff_format(data)
    if fmt is None:
        raise UploadError(415, "unsupported_type", "not a JPEG, PNG or WEBP image (judged by its content)")
    width, height = header_size(data, fmt)
    if width <= 0 or height <= 0:
        raise _corrupt(f"{fmt} header claims a {width} x {height} image")
    if width * height > max_pixels:
        raise UploadError(413, "pixel_limit", f"the image claims {width} x {height} = {width * height:,} "
                                              f"pixels, over the limit of {max_pixels:,}")
    try:
        # open_image: Pillow's bomb warning as an error, under the readers' lock (decode_upload
        # runs in a thread pool, and warnings filters are process-global)
        im = open_image(io.BytesIO(data), formats=[fmt], name="upload")
        frames = getattr(im, "n_frames", 1)
        if im.size != (width, height):  # e.g. a second SOF: trust nothing bigger than checked
            if im.size[0] * im.size[1] > max_pixels:
                raise UploadError(413, "pixel_limit", f"the image is {im.size[0]} x {im.size[1]} pixels, "
                                                      f"over the limit of {max_pixels:,}")
        im.seek(0)
        im.load()
        im = to_rgb(ImageOps.exif_transpose(im))   # the one conversion: 16-bit scaled, not clipped
    except UploadError:
        raise
    except (ImageTooLarge, Image.DecompressionBombError):
        raise UploadError(413, "pixel_limit", f"the image is too large to decode: over the decompression-bomb "
                                              f"limit of {Image.MAX_IMAGE_PIXELS:,} pixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, struct.error,
            IndexError, TypeError) as e:
        raise _corrupt(str(e).splitlines()[0] if str(e) else type(e).__name__) from None
    return DecodedImage(im, fmt, frames)


__all__ = ["FORMATS", "DecodedImage", "UploadError", "decode_upload", "header_size", "sniff_format"]
