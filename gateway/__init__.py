"""acs-gateway: a SIP/RTP gateway on Twisted with an ACS Call Automation REST surface."""

__version__ = "0.1.0"
