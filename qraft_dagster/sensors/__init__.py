"""Sensors that turn landed data into partitioned runs."""
