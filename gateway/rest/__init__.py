"""The HTTPS REST surface that the ACS Call Automation SDK drives (see ACS_REST.md)."""
