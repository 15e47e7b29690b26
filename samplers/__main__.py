import os
import signal
import sys

from .cli import main


def run() -> int:
    """The ``samplers`` command: SIGTERM unwinds like Ctrl-C (temporary files are removed on the way out), a reader
    that leaves early (``samplers list | head``) ends it quietly."""
    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        return main()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(run())
