"""python -m sparring == the sparring command."""

import sys

from .cli import main

sys.exit(main())
