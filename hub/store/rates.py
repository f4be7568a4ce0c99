"""Model rates: what each model costs per call type, in units per token or image."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select

from hub.store.accounts import StoreActions
from hub.store.raw import Exec, Operation, rows_changed
from hub.store.schema import ai_model_rates
from middleware.call import CallType

CALL_TYPES: tuple[CallType, ...] = ("chatCompletion", "embedding", "imageGeneration")
RATE_COLUMNS = ("input_rate", "output_rate", "cached_rate", "image_rate", "cache_write_rate")


class Rates(StoreActions):
    """The rate book the credit check and billing price calls with."""

    async def set_rate(
        self,
        model: str,
        call_type: CallType,
        *,
        input_rate: int,
        output_rate: int,
        cached_rate: int | None = None,
        image_rate: int | None = None,
        cache_write_rate: int | None = None,
    ) -> None:
        """Create or replace the rate of a model for one call type."""
        values = {
            "input_rate": input_rate,
            "output_rate": output_rate,
            "cached_rate": cached_rate,
            "image_rate": image_rate,
            "cache_write_rate": cache_write_rate,
        }
        await self.set_rates([(model, call_type, values)])

    async def set_rates(self, rates: Sequence[tuple[str, str, Mapping[str, int | None]]]) -> None:
        """Create or replace several rates — (model, call type, {input_rate, output_rate,
        cached_rate, image_rate, cache_write_rate}) — all in one transaction: if one cannot
        be written, none is."""
        now = time.time()
        rows = [
            {"p_model": model, "p_type": call_type, "p_now": now}
            | {f"p_{name}": values.get(name) for name in RATE_COLUMNS}
            for model, call_type, values in rates
        ]

        def op() -> Operation[None]:
            for row in rows:
                if (yield Exec(self.sql.update_rate, row)) == 0:
                    yield Exec(self.sql.insert_rate, row)

        await self.store.run(op)
        self.store.forget_caches()

    async def delete_rate(self, model: str, call_type: CallType) -> bool:
        """Remove a model's rate for one call type; False if it had none."""
        values = {"p_model": model, "p_type": call_type}
        deleted = await self.store.run(lambda: rows_changed(Exec(self.sql.delete_rate, values)))
        self.store.forget_caches()
        return deleted > 0

    async def list_rates(self) -> list[dict[str, Any]]:
        """Every rate, by model and call type."""
        return await self.store.query(
            select(ai_model_rates).order_by(ai_model_rates.c.model, ai_model_rates.c.type)
        )
