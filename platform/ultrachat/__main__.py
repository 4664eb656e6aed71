import sys

from ultrachat.cli import main

sys.exit(main())
