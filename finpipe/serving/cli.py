"""The `finpipe` command: `finpipe serve` runs the prediction service under uvicorn;
`finpipe keys create NAME --scope read|admin` makes an API key and prints its entry."""

from __future__ import annotations

import argparse
import sys

from finpipe.serving.auth import READ, SCOPES, create_key, load_keys
from finpipe.serving.settings import Settings


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="finpipe", description=__doc__.splitlines()[0])
    commands = main.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve", help="run the prediction service (settings from FINPIPE_* variables)"
    )
    serve.add_argument("--host", help="default FINPIPE_API_HOST or 127.0.0.1")
    serve.add_argument("--port", type=int, help="default FINPIPE_API_PORT or 8000")
    serve.add_argument("--data-root", help="default FINPIPE_DATA_ROOT or ./data")
    serve.add_argument("--log-level", default="info")
    serve.add_argument(
        "--access-log", action="store_true", help="log every request (off: it halves throughput)"
    )
    keys = commands.add_parser("keys", help="API keys")
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="make a key and print the entry to store")
    create.add_argument("name", help="lower-case name, e.g. dashboard")
    create.add_argument("--scope", choices=SCOPES, default=READ)
    return main


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from finpipe.serving.app import create_app

    settings = Settings.from_env(host=args.host, port=args.port, data_root=args.data_root)
    if not load_keys(settings.keys_file, settings.keys):
        print(
            "finpipe serve: no API keys: set FINPIPE_API_KEYS_FILE or FINPIPE_API_KEYS "
            "(make a key with `finpipe keys create NAME`)",
            file=sys.stderr,
        )
        return 2
    app = create_app(settings)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=args.log_level,
        access_log=args.access_log,
        server_header=False,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "serve":
            return serve(args)
        secret, entry = create_key(args.name, args.scope)
    except ValueError as error:  # bad settings, key entries or names: the message says which
        print(f"finpipe {args.command}: {error}", file=sys.stderr)
        return 2
    print(f"key (give it to the client; it is not stored anywhere): {secret}")
    print(f"entry (a line of FINPIPE_API_KEYS_FILE, or FINPIPE_API_KEYS): {entry}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
