"""`python -m training.phantom`: the generator's command line (training.phantom.command_line)."""
import sys

from flare_common import cli
from training.phantom.command_line import main

if __name__ == "__main__":
    sys.exit(cli.run(main))
