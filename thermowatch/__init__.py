"""thermowatch: the top floor -- the ``thermowatch`` command, the demo, the
live web view and exact accounting. Nothing below imports it."""

from stagekit import __version__

__all__ = ["__version__"]
