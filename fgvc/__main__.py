"""``python -m fgvc ...``: the ``fgvc`` command."""

from fgvc.commands.main import main

raise SystemExit(main())
