"""The ``dystream`` subcommands that run the product end to end: ``replay`` (a bag through the engine,
offline), ``render`` (WAVs to an MP4), ``demo`` (the node, a bag player and a recorder over DDS) and
``make-bag`` (WAVs to a bag). Each module is a thin layer over ``runtime.engine`` and ``io`` and exposes
``register(subparsers)`` for ``dystream_ros.cli``."""
