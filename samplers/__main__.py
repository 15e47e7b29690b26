import signal
import sys

from .cli import main, reader_left, stdout_closed


def run() -> int:
    """The ``samplers`` command: SIGTERM unwinds like Ctrl-C (temporary files are removed on the way out), a reader
    that leaves early (``samplers list | head``) ends it quietly."""
    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        try:
            status = main()
        except SystemExit:  # argparse's --help (or usage error) exits: its text is flushed here, not at exit
            sys.stdout.flush()
            raise
        sys.stdout.flush()
        return status
    except BrokenPipeError:  # outside a command's run (main ends its own quietly): --help whose write failed
        # (samplers.core.argtypes.ArgumentParser lets that error through; a write that went out ends with 0, as git)
        if not stdout_closed():
            raise
        return reader_left()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(run())
