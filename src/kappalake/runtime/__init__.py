"""Runtime: data directory layout, JVM jar resolution, Spark session, embedded local stack."""
