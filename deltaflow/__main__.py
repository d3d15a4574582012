import sys

from deltaflow.cli import main

if __name__ == "__main__":  # engine subprocesses re-import this module as __mp_main__
    sys.exit(main())
