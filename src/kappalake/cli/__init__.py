"""The ``kappalake`` command line, one module per command group."""
