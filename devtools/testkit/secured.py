"""The session's secured broker from a test's side: its listeners' client properties and its ACLs."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

# The ACL types are documented in confluent_kafka.admin, which re-exports them without listing them as public.
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from devtools.kafka_local import LocalKafka
from devtools.tls_local import TlsFiles


@dataclasses.dataclass(frozen=True)
class SecuredKafka:
    """The session's secured broker: SASL_SSL (SCRAM-SHA-512) and mutual-TLS listeners with ACLs enforced.

    `plain` is its unauthenticated listener, whose principal is a super user: tests create topics and ACLs and
    produce through it, so only the bridge's own connections meet the security under test.
    """

    broker: LocalKafka
    user: str
    password: str

    @property
    def plain(self) -> str:
        return self.broker.bootstrap

    @property
    def tls(self) -> TlsFiles:
        return self.broker.tls

    def sasl_properties(self) -> dict[str, str]:
        """The bridge's properties for the SASL_SSL listener, all but the password (given by the environment)."""
        return {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": self.user,
            "ssl.ca.location": str(self.tls.ca),
        }

    def mtls_properties(self) -> dict[str, str]:
        return {
            "security.protocol": "SSL",
            "ssl.ca.location": str(self.tls.ca),
            "ssl.certificate.location": str(self.tls.client_cert),
            "ssl.key.location": str(self.tls.client_key),
        }

    def grant(self, principal: str, topics: Sequence[str], group: str, dead_letter_topic: str | None) -> None:
        """Exactly the ACLs docs/operations.md lists: Read on the topics and the group, Write on the DLQ topic."""
        allow = AclPermissionType.ALLOW
        literal = ResourcePatternType.LITERAL
        bindings = [
            AclBinding(ResourceType.TOPIC, t, literal, principal, "*", AclOperation.READ, allow) for t in topics
        ]
        bindings.append(AclBinding(ResourceType.GROUP, group, literal, principal, "*", AclOperation.READ, allow))
        if dead_letter_topic is not None:
            bindings.append(
                AclBinding(ResourceType.TOPIC, dead_letter_topic, literal, principal, "*", AclOperation.WRITE, allow)
            )
        self._create(bindings)

    def grant_describe(self, principal: str, topic: str) -> None:
        """Describe alone on a topic: metadata, but no records."""
        literal, allow = ResourcePatternType.LITERAL, AclPermissionType.ALLOW
        self._create([AclBinding(ResourceType.TOPIC, topic, literal, principal, "*", AclOperation.DESCRIBE, allow)])

    def _create(self, bindings: list[AclBinding]) -> None:
        admin = AdminClient({"bootstrap.servers": self.plain})
        for future in admin.create_acls(bindings).values():
            future.result(timeout=30)
