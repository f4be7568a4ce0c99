"""The thin streaming reverse proxy: one request upstream, the answer back as it arrives.

connect  reaching a provider: failover between providers and their keys
relay    normalized chunks of a translated stream, rendered by the client's format
stream   the stream loop, and billing whatever a stream delivered
whole    whole-body answers
watch    the hang-up and stopped-reader watch
app      the Proxy ASGI app that ties them together
"""

from hub.proxy.app import Proxy

__all__ = ["Proxy"]
