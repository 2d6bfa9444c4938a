"""`python -m bench.chaos`: see bench/chaos/__init__.py."""

import sys

from bench.chaos.run import main

if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("[chaos] interrupted; processes stopped", file=sys.stderr)
        sys.exit(130)
