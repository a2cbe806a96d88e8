"""``python -m helpkit``: the same command as the ``helpkit`` console script."""

from helpkit.cli import main

main()
