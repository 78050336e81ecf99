"""YAML read the way an operator means it: keys are the text written, credentials are text.

PyYAML follows YAML 1.1, where a plain `no`, `on` or `0123` is a boolean or an octal number. As a mapping key that
sends Norway's records (`lookup: {no: …}`) to the wrong application; as a password it turns `0123` into 83. So every
scalar key is kept as written, and the value of a credential property (by `bridge.config.credentials.secret_property`)
under `kafka.properties` or `avro.schema_registry_properties` is kept as written; every other value reads as YAML
says (numbers, booleans, lists).
"""

from __future__ import annotations

from typing import Any, Final

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode

from bridge.config.credentials import secret_property

_STR: Final = "tag:yaml.org,2002:str"
_PROPERTY_SECTIONS: Final = (("kafka", "properties"), ("avro", "schema_registry_properties"))


class _Loader(yaml.SafeLoader):
    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        self.flatten_mapping(node)
        for key, _ in node.value:
            if isinstance(key, ScalarNode) and key.tag != _STR:
                key.tag = _STR
        return super().construct_mapping(node, deep=deep)


def load(text: str) -> Any:
    """One YAML document as data, keys as written and credentials as text; raises yaml.YAMLError."""
    node = yaml.compose(text, Loader=_Loader)
    if node is None:
        return None
    for section, properties in _PROPERTY_SECTIONS:
        for name, value in _entries(_child(_child(node, section), properties)):
            if secret_property(name) and isinstance(value, ScalarNode):
                value.tag = _STR
    loader = _Loader("")
    try:
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _child(node: Node | None, key: str) -> Node | None:
    return next((value for name, value in _entries(node) if name == key), None)


def _entries(node: Node | None) -> list[tuple[str, Node]]:
    if not isinstance(node, MappingNode):
        return []
    return [(name.value, value) for name, value in node.value if isinstance(name, ScalarNode)]
