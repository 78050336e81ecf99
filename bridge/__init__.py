"""appmetrica-kafka-bridge: Avro events from Kafka to the AppMetrica Post API."""

__version__ = "0.1.0"
