"""
C{python -m aetasip.admin}: the C{aetasip-admin} command.
"""

import sys

from aetasip.admin.cli import main

sys.exit(main())
