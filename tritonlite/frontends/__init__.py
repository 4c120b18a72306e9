"""Transports: each converts its wire format to the core's request type."""
