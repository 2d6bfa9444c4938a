"""`python -m bench.pipeline`: see bench/pipeline/__init__.py."""

import sys

from bench.pipeline.run import main

if __name__ == "__main__":
    sys.exit(main())
