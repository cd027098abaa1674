"""torchvat (core re-exports land with torchvat.core)."""

__version__ = "0.1.0"
