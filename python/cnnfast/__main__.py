"""`python -m cnnfast`: the same as the `cnnfast` command."""
import sys

from .cli import main

sys.exit(main())
