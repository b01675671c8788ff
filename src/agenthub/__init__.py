"""Agent Hub: connects messaging platforms to AI agents."""

__version__ = "0.1.0"
