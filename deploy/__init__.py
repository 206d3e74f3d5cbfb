"""Deployment helpers for thermowatch (local process stack, service units)."""
