"""The Kafka side: the consumer seam, its implementations, the dead-letter producer and the access check."""
