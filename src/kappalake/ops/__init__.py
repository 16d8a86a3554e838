"""Operations: progress collection, run records, status."""
