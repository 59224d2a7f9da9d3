import sys

from llamafoundry.cli import main

sys.exit(main())
