"""Provider adapters: one small class per provider, one error type (see base.py)."""

from .base import OutboundMessage, Provider, ProviderError
from .registry import PROVIDERS, SLUGS, build_adapter

__all__ = ["PROVIDERS", "SLUGS", "OutboundMessage", "Provider", "ProviderError", "build_adapter"]
