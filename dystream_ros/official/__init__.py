"""The released DyStream model (``profile="official"``): networks, strict converter, inference modes.

See docs/OFFICIAL.md. Rank 3 in the package layers (like ``runtime``): it imports ``config``, ``audio``,
``io``, ``data`` and ``model`` only.
"""
