"""Canned responses: ready answers operators insert with `/shortcut`."""
