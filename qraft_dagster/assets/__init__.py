"""Partitioned assets: short adapters that call qraft_core and report metadata."""
