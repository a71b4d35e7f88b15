import sys

from blvnb.cli import main

sys.exit(main())
