"""What a request's prompt comes to in tokens, about, counted the way providers bill it.

Text at four characters a token, but non-Latin text (CJK, Cyrillic, Arabic, ...) at a token
a character; images by their size, read from the first bytes of a data URL, with each
provider family's published formula; files and audio by their size. Used where the
provider reported no usage (a call cut off or hung up on) and to hold credit at admission,
so it reads only what it must: no image or file is decoded past its header.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct
from typing import Any, Literal

Family = Literal["openai", "anthropic", "gemini"]

# English text averages about four characters a token.
CHARS_PER_TOKEN = 4
# Role and framing of each message, in characters.
MESSAGE_FRAMING = 4

# An image whose size cannot be read (a remote URL, an unknown format): the most any family
# counts for one image at its default detail (Anthropic's ~1.15 megapixels at w*h/750;
# OpenAI's largest is 1,445, Gemini 3's 1,120, Gemini 2's six 768 px tiles 1,548).
UNKNOWN_IMAGE_TOKENS = 1600
# OpenAI: 85 for the image, 170 per 512 px tile after scaling; `detail: low` is 85 only.
OPENAI_BASE, OPENAI_TILE = 85, 170
# Anthropic: w*h/750 after the long edge is scaled to at most 1568 px, at most ~1,600.
ANTHROPIC_PIXELS_PER_TOKEN, ANTHROPIC_LONG_EDGE = 750, 1568
# Gemini: 258 for an image within 384 px, else 258 per 768 px tile.
GEMINI_TILE = 258

# Files (PDFs) are billed per page, text and a picture of each page; pages run from a few KB
# of text to megabytes of scans. 100 tokens a KiB counts a 200 KiB, 20-page text PDF at its
# ~20,000 tokens; scans are overcounted, which errs on the operator's side, as they are rare.
FILE_TOKENS_PER_KIB = 100
MIN_FILE_TOKENS = UNKNOWN_IMAGE_TOKENS  # one page as an image: a file by id, or a tiny one
# Audio: 32 tokens a second (Gemini's published figure, the highest of the families), its
# length from a WAV header's byte rate, else from its size at 64 kbit/s.
AUDIO_TOKENS_PER_SECOND = 32
DEFAULT_AUDIO_BYTES_PER_SECOND = 8000

# Enough of a data URL to reach a JPEG's size marker past its EXIF block, decoded at most.
_HEADER_CHARS = 65536


def text_tokens(text: str) -> int:
    """Tokens in a text: Latin at four characters a token, anything wider at one each."""
    if text.isascii():
        return -(-len(text) // CHARS_PER_TOKEN)
    # Characters past Latin-1 (CJK, Cyrillic, Greek, Arabic, ...) are about a token each in
    # every provider's tokenizer, not a quarter of one. Counted by what Latin-1 cannot
    # encode: a C loop, where a regular expression took 30 times as long.
    wide = len(text) - len(text.encode("latin-1", "ignore"))
    return -(-(len(text) - wide) // CHARS_PER_TOKEN) + wide


def json_tokens(value: Any) -> int:
    """Tokens of a JSON value (a schema, tool calls) as the provider reads its text."""
    return text_tokens(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def prompt_tokens(body: dict[str, Any], family: Family | None = None) -> int:
    """Tokens the request body's prompt comes to; for images, by `family`'s formula, or
    the largest of the families' when None (to hold credit before the provider is known)."""
    tokens = 0
    chars = 0
    for message in _list(body.get("messages")):
        if not isinstance(message, dict):
            continue
        chars += MESSAGE_FRAMING
        content = message.get("content")
        if isinstance(content, str):
            tokens += text_tokens(content)
        for part in _list(content):
            if isinstance(part, dict):
                tokens += part_tokens(part, family)
        if message.get("tool_calls"):
            tokens += json_tokens(message["tool_calls"])
    for key in ("tools", "functions", "response_format"):
        if body.get(key):
            tokens += json_tokens(body[key])
    for key in ("prompt", "input"):  # image generation; embeddings
        tokens += _input_tokens(body.get(key))
    return max(1, tokens + -(-chars // CHARS_PER_TOKEN))


def part_tokens(part: dict[str, Any], family: Family | None) -> int:
    """Tokens of one content part of an OpenAI message."""
    kind = part.get("type")
    if kind in ("text", "input_text"):
        return text_tokens(str(part.get("text", "")))
    if kind == "image_url":
        image = part.get("image_url")
        image = image if isinstance(image, dict) else {"url": image}
        size = image_size(str(image.get("url", "")))
        return image_tokens(size, str(image.get("detail", "auto")), family)
    if kind == "input_audio":
        audio = part.get("input_audio")
        return audio_tokens(audio if isinstance(audio, dict) else {})
    if kind == "file":
        file = part.get("file")
        data = file.get("file_data") if isinstance(file, dict) else None
        return file_tokens(data if isinstance(data, str) else "")
    return 0


def image_tokens(size: tuple[int, int] | None, detail: str, family: Family | None) -> int:
    """Tokens of one image of this size (None: unknown) for a family (None: the largest)."""
    if family is None:
        return max(image_tokens(size, detail, f) for f in ("openai", "anthropic", "gemini"))
    if family == "openai" and detail == "low":
        return OPENAI_BASE
    if size is None:
        return UNKNOWN_IMAGE_TOKENS
    width, height = size
    if family == "openai":
        scale = min(1.0, 2048 / max(width, height))
        scale *= min(1.0, 768 / (min(width, height) * scale))
        tiles = math.ceil(width * scale / 512) * math.ceil(height * scale / 512)
        return OPENAI_BASE + OPENAI_TILE * tiles
    if family == "anthropic":
        scale = min(1.0, ANTHROPIC_LONG_EDGE / max(width, height))
        pixels = width * scale * height * scale
        return min(UNKNOWN_IMAGE_TOKENS, math.ceil(pixels / ANTHROPIC_PIXELS_PER_TOKEN))
    if width <= 384 and height <= 384:
        return GEMINI_TILE
    return GEMINI_TILE * math.ceil(width / 768) * math.ceil(height / 768)


def file_tokens(data_url: str) -> int:
    """Tokens of a file (a PDF) by the size of its data; a file by id at one page."""
    kib = _decoded_size(data_url) / 1024
    return max(MIN_FILE_TOKENS, math.ceil(kib * FILE_TOKENS_PER_KIB))


def audio_tokens(audio: dict[str, Any]) -> int:
    """Tokens of an `input_audio` part by its length in seconds."""
    data = audio.get("data")
    data = data if isinstance(data, str) else ""
    size = _decoded_size(data)
    rate = DEFAULT_AUDIO_BYTES_PER_SECOND
    header = _decode_prefix(data, 44)
    if header[:4] == b"RIFF" and header[8:12] == b"WAVE" and len(header) >= 32:
        rate = struct.unpack_from("<I", header, 28)[0] or rate
    return max(1, math.ceil(size / rate * AUDIO_TOKENS_PER_SECOND))


def image_size(url: str) -> tuple[int, int] | None:
    """(width, height) from a base64 data URL's header bytes: PNG, GIF, WebP or JPEG."""
    if not url.startswith("data:"):
        return None
    head = _decode_prefix(url, _HEADER_CHARS)
    size: tuple[int, int] | None = None
    if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) >= 24:
        size = struct.unpack_from(">II", head, 16)
    elif head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
        size = struct.unpack_from("<HH", head, 6)
    elif head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        size = _webp_size(head)
    elif head[:2] == b"\xff\xd8":
        size = _jpeg_size(head)
    if size is None or size[0] <= 0 or size[1] <= 0:
        return None
    return size


def _webp_size(head: bytes) -> tuple[int, int] | None:
    chunk = head[12:16]
    if len(head) < (25 if chunk == b"VP8L" else 30):
        return None
    if chunk == b"VP8 ":
        width, height = struct.unpack_from("<HH", head, 26)
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        width = int.from_bytes(head[24:27], "little") + 1
        return width, int.from_bytes(head[27:30], "little") + 1
    return None


# JPEG start-of-frame markers (the ones that carry the size): C0-CF but C4, C8 and CC.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_size(head: bytes) -> tuple[int, int] | None:
    at = 2
    while at + 9 <= len(head):
        if head[at] != 0xFF:
            return None
        marker = head[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in _SOF:
            height, width = struct.unpack_from(">HH", head, at + 5)
            return width, height
        if 0xD0 <= marker <= 0xD9 or marker == 0x01:  # markers without a length
            at += 2
            continue
        at += 2 + struct.unpack_from(">H", head, at + 2)[0]
    return None


def _decode_prefix(data_url: str, chars: int) -> bytes:
    """The first bytes of a base64 data URL's data (or of bare base64), or b""."""
    _, comma, data = data_url.partition(",") if data_url.startswith("data:") else ("", "", "")
    data = data if comma else data_url
    prefix = data[: chars - chars % 4]
    try:
        return base64.b64decode(prefix[: len(prefix) - len(prefix) % 4])
    except (binascii.Error, ValueError):
        return b""


def _decoded_size(data_url: str) -> int:
    data = data_url.partition(",")[2] if data_url.startswith("data:") else data_url
    return len(data) * 3 // 4 - data[-2:].count("=")


def _input_tokens(value: Any) -> int:
    """A text, a list of texts, or token ids (one token each), as embeddings take them."""
    if isinstance(value, str):
        return text_tokens(value)
    if not isinstance(value, list):
        return 0
    total = 0
    for item in value:
        if isinstance(item, int):
            total += 1
        elif isinstance(item, str | list):
            total += _input_tokens(item)
    return total


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
