"""`appmetrica-bridge dead-letters`: what is in the dead-letter topic, and sending it back once the cause is fixed."""
