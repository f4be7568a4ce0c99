"""The operator's pages: overview, calls, keys, accounts, rates, providers, playground."""

from hub.dashboard.pages import routes

__all__ = ["routes"]
