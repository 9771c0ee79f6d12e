"""The argument parser every command group adds itself to."""

import argparse
import sys
from typing import NoReturn, TypeAlias

from jobwarden import exitcodes


class UsageParser(argparse.ArgumentParser):
    """argparse, but a usage error exits 64 (EX_USAGE) rather than 2, naming the flag."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(exitcodes.USAGE, f"{self.prog}: error: {message}\n")


Commands: TypeAlias = "argparse._SubParsersAction[UsageParser]"
