"""Interop tests: the gateway against real peers (SIPp, Sippy, baresip, the ACS SDK) on
loopback; ``harness.py`` starts and stops them."""
