"""Sources shipped with flowtrace, imported as ``flowtrace.sources.*``."""
