"""The shipped pipelines: one file per lesson of bcc's Python tutorial.

Run one by name from any directory (``flowtrace run disklatency``); list
them with ``flowtrace list``. Each file is loaded by path, not imported.
"""
