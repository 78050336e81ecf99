"""What the tests, the demo and the benchmark share."""
