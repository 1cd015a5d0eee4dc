"""``python -m bench.bakeoff``: see the package's docstring."""

from .runner import main

main()
