"""``python -m ppl_scenes ...`` is the ``ppl-scenes`` command line (so ``torchrun -m ppl_scenes`` works)."""

import sys

from ppl_scenes.cli import main

if __name__ == "__main__":
    sys.exit(main())
