import sys

from mltrail.cli import main

sys.exit(main())
