"""`python -m service ...`: build the components from the environment and run the CLI."""

import os
import sys

import click

from service.cli import cli
from service.components import build_components
from service.config import Config
from service.errors import ConfigError
from service.logging import configure_logging


def main() -> None:
    try:
        config = Config.from_env(os.environ)
    except ConfigError as error:
        click.echo(f"Error: {error}", err=True)
        sys.exit(1)
    # Logs go to stderr so a command's own output (a token, a password) stays clean on stdout.
    configure_logging(config.project_id, stream=sys.stderr)
    cli.main(prog_name="python -m service", obj=build_components(config))


if __name__ == "__main__":
    main()
