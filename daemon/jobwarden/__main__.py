"""`python -m jobwarden` and the `jobwarden` console script."""

import sys

from jobwarden.cli.main import main as _cli_main


def main() -> None:
    sys.exit(_cli_main(sys.argv[1:]))


if __name__ == "__main__":
    main()
