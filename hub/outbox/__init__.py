"""Ledger rows out to external billing: the outbox's dispatcher and its sinks.

Kept light on import: hub.settings reads hub.outbox.config, which must not pull in the
store or httpx.
"""
