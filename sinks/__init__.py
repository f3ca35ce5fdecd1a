"""Sinks shipped with flowtrace, imported as ``flowtrace.sinks.*``."""
