"""Prompt tokens as providers bill them: images by their size and each family's published
formula, files and audio by size, non-Latin text at a token a character; and holds that
count them from above."""

from __future__ import annotations

import base64
import struct
from typing import Any

import pytest

from middleware.call import Call, Identity
from middleware.credit import held_prompt_tokens
from middleware.tokens import (
    UNKNOWN_IMAGE_TOKENS,
    audio_tokens,
    file_tokens,
    image_size,
    image_tokens,
    prompt_tokens,
    text_tokens,
)


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def png(width: int, height: int) -> bytes:
    ihdr = struct.pack(">I4sIIBBBBB", 13, b"IHDR", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + ihdr + bytes(100)


def jpeg(width: int, height: int, exif: int = 30_000) -> bytes:
    app1 = b"\xff\xe1" + struct.pack(">H", exif + 2) + bytes(exif)  # a big EXIF block first
    sof0 = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app1 + sof0 + b"\xff\xda" + bytes(50)


def webp(chunk: bytes, payload: bytes) -> bytes:
    return b"RIFF" + struct.pack("<I", 100) + b"WEBP" + chunk + struct.pack("<I", 50) + payload


@pytest.mark.parametrize(
    ("data", "size"),
    [
        (png(1024, 768), (1024, 768)),
        (b"GIF89a" + struct.pack("<HH", 320, 200) + bytes(20), (320, 200)),
        (jpeg(4032, 3024), (4032, 3024)),
        (webp(b"VP8X", bytes(4) + (799).to_bytes(3, "little") + (599).to_bytes(3, "little")),
         (800, 600)),
        (webp(b"VP8L", b"\x2f" + ((639) | (479 << 14)).to_bytes(4, "little")), (640, 480)),
        (webp(b"VP8 ", bytes(6) + struct.pack("<HH", 300, 150)), (300, 150)),
    ],
)  # fmt: skip
def test_image_sizes_are_read_from_the_header_bytes(data: bytes, size: tuple[int, int]) -> None:
    assert image_size(data_url(data)) == size


@pytest.mark.parametrize(
    "url", ["https://example.com/cat.png", data_url(b"not an image"), "data:image/png;base64,%%"]
)
def test_an_image_whose_size_cannot_be_read_has_none(url: str) -> None:
    assert image_size(url) is None


@pytest.mark.parametrize(
    ("family", "size", "detail", "tokens"),
    [
        # OpenAI's published examples: scaled to fit 2048, shortest side to 768, 512 px tiles.
        ("openai", (1024, 1024), "auto", 85 + 4 * 170),
        ("openai", (2048, 4096), "high", 85 + 6 * 170),
        ("openai", (4096, 8192), "low", 85),
        ("openai", (100, 100), "auto", 85 + 170),
        # Anthropic: w*h/750, the long edge scaled to 1568, about 1,600 at most.
        ("anthropic", (1000, 1000), "auto", 1334),
        ("anthropic", (200, 200), "auto", 54),
        ("anthropic", (8000, 8000), "auto", 1600),
        # Gemini: 258 within 384 px, else 258 per 768 px tile.
        ("gemini", (384, 384), "auto", 258),
        ("gemini", (1000, 1000), "auto", 4 * 258),
    ],
)
def test_images_are_counted_by_each_familys_formula(
    family: Any, size: tuple[int, int], detail: str, tokens: int
) -> None:
    assert image_tokens(size, detail, family) == tokens


def test_an_image_of_unknown_size_counts_as_the_largest_a_family_bills() -> None:
    for family in ("openai", "anthropic", "gemini", None):
        assert image_tokens(None, "auto", family) == UNKNOWN_IMAGE_TOKENS  # type: ignore[arg-type]
    assert image_tokens(None, "low", "openai") == 85
    # Before the provider is known, the largest of the families' counts.
    assert image_tokens((1000, 1000), "auto", None) == 1334


def test_non_latin_text_is_a_token_a_character_and_latin_four_characters_one() -> None:
    assert text_tokens("hello world!") == 3
    assert text_tokens("你好世界") == 4
    assert text_tokens("Привет") == 6
    assert text_tokens("Hi 你好") == 1 + 2
    assert text_tokens("café crème") == 3  # accented Latin is still Latin


def test_files_and_audio_are_counted_by_their_size() -> None:
    assert file_tokens(data_url(bytes(100 * 1024), "application/pdf")) == 10_000
    assert file_tokens("") == UNKNOWN_IMAGE_TOKENS  # a file by id: a page at least
    # A WAV header says 32,000 bytes a second: 64,000 bytes are 2 s, at 32 tokens a second.
    wav = b"RIFF" + bytes(4) + b"WAVEfmt " + bytes(12) + struct.pack("<I", 32_000) + bytes(12)
    audio = base64.b64encode(wav + bytes(64_000 - len(wav))).decode()
    assert audio_tokens({"data": audio, "format": "wav"}) == 64


def test_a_prompt_counts_its_images_schemas_and_embedding_inputs() -> None:
    image = {"type": "image_url", "image_url": {"url": data_url(png(1024, 1024))}}
    body: dict[str, Any] = {
        "messages": [{"role": "user", "content": [{"type": "text", "text": "What?"}, image]}]
    }
    assert prompt_tokens(body, "openai") == 2 + 765 + 1
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    with_schema = {**body, "response_format": schema}
    assert prompt_tokens(with_schema, "openai") > prompt_tokens(body, "openai") + 10
    assert prompt_tokens({"input": [[1, 2, 3], [4, 5]]}) == 5  # token ids, one each
    assert prompt_tokens({"input": ["你好", "hello"]}) == 2 + 2


def call_with(body: dict[str, Any], raw: bytes) -> Call:
    identity = Identity(account_id=1, user_did="did:abt:u")
    return Call(identity, "chatCompletion", "m", body, raw)


def test_a_hold_counts_a_remote_image_at_the_most_it_may_cost() -> None:
    url = "https://example.com/cat.png"
    body = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": url}]}]}
    raw = b'{"messages":[{"role":"user","content":[{"type":"image_url","image_url":"%s"}]}]}' % (
        url.encode()
    )
    assert held_prompt_tokens(call_with(body, raw)) >= UNKNOWN_IMAGE_TOKENS


def test_a_hold_of_plain_text_is_its_bytes_and_never_less_than_before() -> None:
    body = {"messages": [{"role": "user", "content": "x" * 400}]}
    raw = b'{"messages":[{"role":"user","content":"' + b"x" * 400 + b'"}]}'
    assert held_prompt_tokens(call_with(body, raw)) == len(raw) // 4 + 1
    cjk = {"messages": [{"role": "user", "content": "你" * 400}]}
    raw_cjk = b'{"messages":[{"role":"user","content":"' + ("你" * 400).encode() + b'"}]}'
    assert held_prompt_tokens(call_with(cjk, raw_cjk)) >= 400 + 1
