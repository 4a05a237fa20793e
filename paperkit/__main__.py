import sys

from .cli import main

if __name__ == "__main__":  # spawn-started workers (synth) import this module again: do not rerun the CLI
    sys.exit(main())
