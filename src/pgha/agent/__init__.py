"""The agent: the HA loop's stages as components (see DESIGN.md section 2).

``lifecycle`` (the process and its TaskGroup) builds ``cycle`` (observe -> decide -> execute ->
publish) from ``observe``, ``executor``, ``publish``, ``lease``, ``commands``, ``failsafe``,
``local_config`` and ``peers``. Nothing in this package is imported by ``core``, ``dcs``, ``pg``
or ``api``.
"""
