"""NAT traversal: the STUN codec (RFC 8489), TURN framing (RFC 8656), time-limited TURN
credentials and the TURN peer-address policy.

Everything here is sans-I/O: bytes, addresses and the current time in, values and bytes out.
"""
