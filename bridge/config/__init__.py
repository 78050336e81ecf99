"""The configuration: its model, loading with the environment's overrides, secrets, and the problems it names."""
