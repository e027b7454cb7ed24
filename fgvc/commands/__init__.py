"""The ``fgvc`` command line; see :mod:`fgvc.commands.main`."""
