"""`python -m modelmux.emulator`: the same flags as `modelmux emulator`."""

import argparse
import sys

from .cli import DESCRIPTION, add_arguments, run

parser = argparse.ArgumentParser(prog="python -m modelmux.emulator", description=DESCRIPTION)
add_arguments(parser)
sys.exit(run(parser.parse_args()))
