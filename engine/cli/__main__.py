"""`python -m lumbar_kb`: the same as the `lumbar-kb` command."""

import sys

from .main import main

sys.exit(main())
