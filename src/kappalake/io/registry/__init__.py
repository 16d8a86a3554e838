"""Schema Registry access for jobs: writer schemas by id with a disk cache, decoding plans, the batch gate."""
