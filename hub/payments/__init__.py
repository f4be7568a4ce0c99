"""Payments that grant credits: Stripe's webhook and a generic signed top-up webhook.

Each paid event becomes one credit grant, exactly once per event id however often the
payment service delivers it (they retry until they get a 2xx, and may send an event twice).
"""
