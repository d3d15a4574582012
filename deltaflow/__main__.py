import sys

from deltaflow.cli import main

sys.exit(main())
