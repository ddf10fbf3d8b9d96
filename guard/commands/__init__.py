"""Subcommands of ``guard``: each module has ``register(subparsers)`` and sets ``run``."""
