"""Record formats beyond JSON: the Confluent wire format, Avro schema resolution and compatibility, Protobuf."""
