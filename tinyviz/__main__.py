import sys

from tinyviz.cli import main

sys.exit(main())
