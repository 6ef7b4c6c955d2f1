"""`python -m camserve`: the `camserve` command line."""
import sys

from camserve.service.cli import main

sys.exit(main())
