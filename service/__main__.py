"""`python -m service ...`: run the CLI; commands build the components from the environment."""

import os

from service.shell.cli import ComponentsFromEnvironment, cli


def main() -> None:
    cli.main(prog_name="python -m service", obj=ComponentsFromEnvironment(os.environ))


if __name__ == "__main__":
    main()
