"""Exchange format for sharing experiments, identical to Dora's ``export``/``import``.

A list of argvs, JSON-encoded, zlib-compressed, base64-encoded and wrapped at
70 columns, so a block exported by Dora imports into adora and back.
"""

from __future__ import annotations

import base64
import binascii
import json
import textwrap
import typing as tp
import zlib

from .errors import ArgumentsError

__all__ = ["dump", "load", "read_block"]


def dump(value: tp.Any) -> str:
    """Encode ``value`` (a list of argvs) as a pasteable block of text."""
    bits = zlib.compress(json.dumps(value).encode())
    return textwrap.fill(base64.b64encode(bits).decode())


def load(block: str) -> tp.Any:
    """Decode a block made by `dump` (or by Dora); raises `ArgumentsError` if corrupt."""
    text = "".join(line.strip() for line in block.splitlines())
    try:
        return json.loads(zlib.decompress(base64.b64decode(text, validate=True)).decode())
    except (binascii.Error, zlib.error, ValueError) as exc:
        raise ArgumentsError(f"Cannot decode the imported block ({exc}). Paste the whole "
                             "text printed by `adora export` or `dora export`.") from exc


def read_block(lines: tp.Iterable[str]) -> str:
    """Read lines until an empty line after some content (as Dora's import)."""
    buffer: list[str] = []
    for line in lines:
        line = line.strip()
        if not line and buffer:
            break
        if line:
            buffer.append(line)
    return "".join(buffer)
