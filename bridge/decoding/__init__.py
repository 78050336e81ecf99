"""Record values to the methods' contracts: Avro and the registry, JSON, mappings, each record judged alone."""
