"""The app layer: the commands that span the library and the model stack (``samplers demo``, ``generate``,
``compare``). It imports ``samplers`` and ``models``; neither imports it. The ``samplers`` command finds these
commands through the ``samplers.commands`` entry point (pyproject.toml)."""
