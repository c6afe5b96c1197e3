"""``python -m ccmon``."""

from ccmon.cli import main

main()
