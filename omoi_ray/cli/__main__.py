"""``python -m omoi_ray.cli``: the same as the ``omoi-ray`` command."""

import sys

from omoi_ray.cli import main

sys.exit(main())
