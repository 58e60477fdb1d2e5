"""`python -m lumbar_kb`: the same as the `lumbar-kb` command."""

import sys

from lumbar_kb.main import main

sys.exit(main())
