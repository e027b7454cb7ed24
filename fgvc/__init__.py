"""fgvc: fine-grained visual recognition with iSQRT-COV networks."""

__version__ = "0.1.0"
