"""``fgvc.export.load(DIR)``: the documented way to load an export bundle in Python.

A thin re-export of :mod:`fgvc.deploy`; the export itself is :mod:`fgvc.deploy.export`.
"""

from fgvc.deploy.bundle import Bundle, load
from fgvc.deploy.export import export_checkpoint

__all__ = ["Bundle", "export_checkpoint", "load"]
