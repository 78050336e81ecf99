"""Local stand-ins for what the bridge talks to: the AppMetrica Post API and a Confluent Schema Registry."""

from bridge.sandbox.config import Faults, Keys
from bridge.sandbox.registry import SchemaRegistry
from bridge.sandbox.server import Sandbox, SandboxOptions
from bridge.sandbox.state import RequestRecord, SandboxState

__all__ = ["Faults", "Keys", "RequestRecord", "Sandbox", "SandboxOptions", "SandboxState", "SchemaRegistry"]
