import os
import sys

from .cli import main


def run() -> int:
    try:
        return main()
    except BrokenPipeError:  # `samplers list | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(run())
