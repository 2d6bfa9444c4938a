"""Provider adapters: one module per provider with its adapter class and spec (see spec.py)."""

from .base import OutboundMessage, ProviderAdapter, ProviderError
from .registry import MESSAGING_SLUGS, PROVIDERS, SLUGS, SPECS, build_adapter, spec_for
from .spec import ExtraField, MessageRules, ProviderSpec

__all__ = [
    "MESSAGING_SLUGS",
    "PROVIDERS",
    "SLUGS",
    "SPECS",
    "ExtraField",
    "MessageRules",
    "OutboundMessage",
    "ProviderAdapter",
    "ProviderError",
    "ProviderSpec",
    "build_adapter",
    "spec_for",
]
