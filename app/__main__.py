import sys

from samplers.__main__ import run

sys.exit(run())
