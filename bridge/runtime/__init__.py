"""The runtime: the owner loop, the ledger of offsets, the transform pool, deliveries and readiness."""
