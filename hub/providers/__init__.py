"""Provider adapters: one per upstream protocol."""
