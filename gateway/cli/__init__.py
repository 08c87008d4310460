"""The ``citytwin`` command line: one module per command group (``main`` parses and dispatches)."""
