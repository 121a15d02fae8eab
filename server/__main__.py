"""``python -m server``: serve every model in $TEXTGEN_DATA_DIR/models over gRPC on $TEXTGEN_ADDR.

``python -m server keys ...`` manages the API keys instead (server/keys_cli.py)."""
import logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> int:
    if sys.argv[1:2] == ["keys"]:
        from server.keys_cli import main as keys_main

        return keys_main(sys.argv[2:])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from server.app import StartupError, serve
    from server.auth import TokenFileError
    from server.config import Settings, SettingsError

    try:
        settings = Settings.from_env()
        serve(settings)
    except (SettingsError, TokenFileError, StartupError) as exc:
        print(f"server: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
