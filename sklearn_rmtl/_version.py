"""The library's version, in a module of its own.

Modules of the package import it from here, not from the package's
``__init__``, which imports them; ``pyproject.toml`` reads it too.
"""

__version__ = "0.1.0.dev0"
