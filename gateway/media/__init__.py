"""The media plane: SDP, RTP/RTCP, SRTP, codecs, jitter buffer and the per-call media sessions.

The protocol modules here are sans-I/O (bytes and the current time in, events and bytes out);
`gateway.media.endpoint` is the Twisted adapter that owns the UDP ports.
"""
