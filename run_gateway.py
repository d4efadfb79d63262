#!/usr/bin/env python3
"""Self-service gateway command line: serve, fixtures, population, simulators, campaigns.

Run ``python run_gateway.py --help`` or ``python run_gateway.py COMMAND --help``.
"""

import sys

from gateway.cli import main

if __name__ == "__main__":
    sys.exit(main())
