"""``guard serve``: the drop-in OpenAI-compatible guard proxy (see guard.server.app)."""

from guard.server.app import create_app
from guard.server.config import ServeConfig, load_config

__all__ = ["create_app", "ServeConfig", "load_config"]
