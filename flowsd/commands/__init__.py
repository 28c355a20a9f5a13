"""Sub-commands of the ``flowsd`` command line, one module each (see :mod:`flowsd.cli`)."""
