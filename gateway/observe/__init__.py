"""Observability: the Prometheus metrics endpoint (gateway.observe.metrics)."""
