"""Persistent records: call detail records (and TURN usage) in one SQLite database."""

from gateway.store.cdr import CdrStore

__all__ = ["CdrStore"]
