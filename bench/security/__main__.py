"""`python -m bench.security`: see bench/security/__init__.py."""

import sys

from bench.security.run import main

if __name__ == "__main__":
    sys.exit(main())
