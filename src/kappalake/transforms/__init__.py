"""Pure DataFrame -> DataFrame transformations. Nothing in this package performs I/O."""
