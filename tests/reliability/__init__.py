"""Fault tests: the shop under load while its services fail, and what must hold afterwards."""
