"""``guard serve`` configuration: the guard's settings plus the server's own, read from a YAML
file, then environment variables (``GUARD_<FIELD>``), then command-line flags, each overriding
the one before. Validated once at start; a bad value stops the server with one clear line."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError

from guard.errors import ConfigError
from guard.settings import GuardSettings

ENV_PREFIX = "GUARD_"


class ServeConfig(GuardSettings):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    upstream: str | None = Field(None, description="base URL of an OpenAI-compatible server (…/v1), or a litellm model string")
    upstream_api_base: str | None = Field(None, description="with a litellm model string: the provider's base URL (e.g. Ollama's)")
    upstream_api_key: SecretStr | None = Field(None, description="sent upstream; when unset, the client's own bearer key is forwarded")
    upstream_timeout_s: float = Field(120.0, gt=0, description="total deadline of a non-streamed upstream call")
    upstream_idle_timeout_s: float = Field(60.0, gt=0, description="longest silence between two upstream stream events")
    upstream_connect_timeout_s: float = Field(10.0, gt=0)
    upstream_max_connections: int = Field(256, ge=1, description="concurrent upstream connections")
    upstream_pool_timeout_s: float = Field(30.0, gt=0, description="longest wait for a free upstream connection (then 503)")
    body_read_timeout_s: float = Field(30.0, gt=0, description="a request body not complete by then is answered 400")
    max_json_depth: int = Field(64, ge=4, le=512, description="deepest nesting accepted in a request body")
    shutdown_grace_s: float = Field(30.0, ge=0, description="on SIGTERM, in-flight requests get this long to finish")
    admin_key: SecretStr | None = Field(None, description="bearer key for POST /v1/guard/reload; unset: reload by SIGHUP only")
    api_keys: list[SecretStr] = Field(default_factory=list, description="client bearer keys; empty: no client authentication")
    models: list[str] = Field(default_factory=list, description="what /v1/models lists when the upstream cannot say")
    max_body_bytes: int = Field(4 * 1024 * 1024, gt=0)
    stream_first_window_chars: int = Field(40, ge=1, description="unchecked text held back before the first output check")
    stream_window_chars: int = Field(160, ge=1, description="the hold-back window grows by doubling up to this")
    expose_rationale: bool = Field(True, description="include the judge's rationale in refusals' guard object")
    log_format: Literal["json", "console"] = "json"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    access_log: bool = True


def load_config(file: str | None = None, env: dict[str, str] | None = None, flags: dict[str, Any] | None = None) -> ServeConfig:
    """YAML < environment < flags. Unknown keys and bad values raise ConfigError naming the source."""
    merged: dict[str, Any] = {}
    if file:
        merged.update(_from_yaml(file))
    merged.update(_from_env(os.environ if env is None else env))
    merged.update({k: v for k, v in (flags or {}).items() if v is not None and v != []})
    try:
        return ServeConfig.model_validate(merged)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "config"
        raise ConfigError(f"invalid setting {where}: {err['msg']}"
                          + (f" ({len(e.errors()) - 1} more)" if len(e.errors()) > 1 else "")) from None


def _from_yaml(file: str) -> dict[str, Any]:
    import yaml

    path = Path(file)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{file}: cannot read config: {e.strerror}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{file}{line}: invalid YAML: {getattr(e, 'problem', None) or e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: a config file must be a mapping of settings")
    unknown = sorted(set(data) - set(ServeConfig.model_fields))
    if unknown:
        raise ConfigError(f"{file}: unknown setting {unknown[0]!r}")
    # relative policy paths are relative to the config file, as users expect
    if isinstance(data.get("policies"), list):
        data["policies"] = [str((path.parent / p)) if not Path(p).is_absolute() else p for p in data["policies"]]
    return data


def _from_env(env: dict[str, str]) -> dict[str, Any]:
    """``GUARD_PORT=8080``, ``GUARD_API_KEYS=k1,k2``, ``GUARD_STAGES=["input"]``: lists as JSON or commas."""
    out: dict[str, Any] = {}
    for name, field in ServeConfig.model_fields.items():
        raw = env.get(ENV_PREFIX + name.upper())
        if raw is None:
            continue
        if "list" in str(field.annotation) or "dict" in str(field.annotation) or "Price" in str(field.annotation):
            try:
                out[name] = json.loads(raw)
            except ValueError:
                out[name] = [p.strip() for p in raw.split(",") if p.strip()]
        else:
            out[name] = raw
    return out
