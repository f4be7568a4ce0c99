"""The model listing the AIGNE SDK reads (GET /api/ai/models)."""

from __future__ import annotations

from typing import Any

from middleware.money import credits_text


def models_listing(rates: list[dict[str, Any]], served: set[str], kind: str | None) -> list[Any]:
    """GET /api/ai/models: the priced models this hub serves, as the SDK lists them."""
    kinds = {"chat": "chatCompletion", "image": "imageGeneration", "embedding": "embedding"}
    wanted = kinds.get(kind) if kind else None
    listed = []
    for rate in rates:
        provider = str(rate["model"]).split("/", 1)[0]
        if rate["model"] not in served or (wanted and rate["type"] != wanted):
            continue
        listed.append(
            {
                "model": rate["model"],
                "type": next((k for k, v in kinds.items() if v == rate["type"]), rate["type"]),
                "provider": provider,
                "input_credits_per_token": credits_text(int(rate["input_rate"])),
                "output_credits_per_token": credits_text(int(rate["output_rate"])),
                "providerDisplayName": provider,
                "status": {"available": True},
            }
        )
    return listed
