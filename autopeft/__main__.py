import os
import sys

if sys.path and sys.path[0] in ("", os.getcwd()):  # python -m puts the current folder first: installed packages go first
    sys.path.append(sys.path.pop(0))

from autopeft.cli import main  # noqa: E402

raise SystemExit(main())
