"""What operators see: the health endpoints, the metrics, the logs."""
