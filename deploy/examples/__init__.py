"""Example configurations, installed as ``citytwin.gateway.examples`` so the demo runs from them."""
