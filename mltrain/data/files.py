"""Opening data files defensively: regular files only, and arrays and images measured from their
headers before anything is decoded, so a hostile file is refused instead of filling memory."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import BinaryIO

from ..errors import UserError

MAX_IMAGE_PIXELS = 89_478_485  # Pillow's own bound on decoded pixels (a 0.25 GiB RGBA image)


def regular_file(path: Path, key: str, what: str) -> Path:
    """`path` if it is a regular file; /dev/zero, a FIFO or a folder would hang or mislead a reader."""
    if not path.exists():
        raise UserError(f"{key} {path}: no such file; give {what} "
                        "(a relative path is read from the config file's directory)")
    if not path.is_file():
        raise UserError(f"{key} {path}: not a regular file; give {what}")
    return path


CGROUP = Path("/sys/fs/cgroup")  # a container's own cgroup (v2) where it has a cgroup namespace


def available_memory() -> int:
    """Bytes this process may still take: the least of the memory free now (physical pages), the
    room under its address-space limit (ulimit -v) and under its cgroup's memory limit (a
    container's); a large number where none of them is known."""
    bounds = []
    try:
        bounds.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        pass
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
        if limit != resource.RLIM_INFINITY:
            try:  # less the address space mapped now
                limit -= int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
            except (ValueError, OSError, IndexError):
                pass
            bounds.append(max(0, limit))
    except (ImportError, ValueError, OSError):
        pass
    try:
        cgroup_max = (CGROUP / "memory.max").read_text().strip()
        if cgroup_max != "max":
            bounds.append(max(0, int(cgroup_max) - int((CGROUP / "memory.current").read_text())))
    except (ValueError, OSError):
        pass
    return min(bounds, default=1 << 62)


def check_image_header(path: Path | BinaryIO, key: str = "data.root", where: str | None = None) -> None:
    """Refuse images whose header declares more than MAX_IMAGE_PIXELS, or cannot be read (their
    size unknown, a decoder might still expand them), before any decoding. `path`: a file, or
    an image's bytes (then `where` says where they came from); `key` names the config key the
    image came through in the message."""
    from PIL import Image

    where = where or str(path)
    pillow_bound, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # read the size, whatever it is
    try:
        with Image.open(path) as image:  # parses the header only
            width, height = image.size
    except Exception as error:  # whatever Pillow's parsers raise on bytes they cannot read
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        detail = detail.replace(repr(path), "its bytes") if not isinstance(path, Path) else detail
        raise UserError(f"{key}: cannot decode image {where}: its header cannot be read ({detail}), so its size "
                        "is unknown; replace or remove the file") from None
    finally:
        Image.MAX_IMAGE_PIXELS = pillow_bound
    if width * height > MAX_IMAGE_PIXELS:
        raise UserError(f"{key}: image {where} declares {width}x{height} pixels, more than "
                        f"{MAX_IMAGE_PIXELS:,} (a decompression bomb?); resize or remove it")


def npy_bytes(shape: tuple[int, ...], itemsize: int) -> int:
    return math.prod(shape) * itemsize
