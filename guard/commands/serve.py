"""``guard serve``: run the OpenAI-compatible guard proxy."""

from __future__ import annotations

import signal
import sys


def register(sub) -> None:
    p = sub.add_parser("serve", help="run the drop-in OpenAI-compatible guard proxy",
                       description="Settings come from --config FILE (YAML), then GUARD_* environment variables, "
                                   "then these flags, each overriding the one before.")
    p.add_argument("--config", default=None, metavar="FILE", help="YAML file of settings (see docs/server.md)")
    p.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--upstream", default=None, metavar="URL|MODEL",
                   help="an OpenAI-compatible base URL (…/v1) or a litellm model string")
    p.add_argument("--judge", default=None, help="offline (default), cascade:MODEL, or a litellm model string")
    p.add_argument("--policy", action="append", default=None, metavar="PATH", help="policy file or folder (repeatable)")
    p.add_argument("--cache-url", dest="cache_url", default=None, metavar="redis://HOST:PORT/DB",
                   help="a verdict cache shared by replicas (Redis), behind the in-process one")
    p.add_argument("--mode", choices=["enforce", "shadow"], default=None)
    p.add_argument("--fail-mode", dest="fail_mode", choices=["closed", "open"], default=None)
    p.add_argument("--log-format", dest="log_format", choices=["json", "console"], default=None)
    p.add_argument("--log-level", dest="log_level", choices=["debug", "info", "warning", "error"], default=None)
    p.set_defaults(run=run)


def run(args) -> int:
    from guard.logs import configure
    from guard.server.config import load_config

    flags = {k: getattr(args, k) for k in ("host", "port", "upstream", "judge", "mode", "fail_mode", "log_format",
                                           "log_level", "cache_url")}
    flags["policies"] = args.policy
    config = load_config(args.config, flags=flags)
    configure(level=config.log_level, json=config.log_format == "json")

    from guard.server.run import base_url, bind, limit_malloc_arenas, run as run_server, uvicorn_server

    limit_malloc_arenas()
    from guard.pipeline import Guard
    from guard.server.app import create_app

    guard = Guard.create(config)  # policy errors surface here, before the port is taken
    app = create_app(config, guard=guard)
    try:
        sock = bind(config.host, config.port)
    except OSError as e:
        from guard.errors import ConfigError

        raise ConfigError(f"cannot listen on {config.host}:{config.port}: {e.strerror}") from None
    server = uvicorn_server(app, log_level=config.log_level)
    print(f"guard serve: listening on {base_url(sock)} (policy {guard.spec.version}, judge {guard.judge.name}, "
          f"upstream {config.upstream or 'none'})", file=sys.stderr, flush=True)
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal to the handler it found:
    # a no-op one makes a clean stop exit 0 (Ctrl-C still ends with 130).
    signal.signal(signal.SIGTERM, lambda *_: None)
    signal.signal(signal.SIGHUP, app.app.state.reloader.on_signal)  # reload the policies (guard.reload)
    run_server(server.serve(sockets=[sock]))
    return 0
