"""Delta Lake writers (streaming append; MERGE via foreachBatch)."""
