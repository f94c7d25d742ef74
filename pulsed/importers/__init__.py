"""Importers: keepalived, ldirectord and piranha configs in, pulsed TOML out.

Each importer reads its format into a ``Table`` tree (pulsed.importers.emit)
whose parts remember the source line they came from, and lists on a
``Report`` what it could not translate. ``settle`` then runs the result
through pulsed's own validation and leaves out what it refuses, so that the
written TOML always passes ``check-config``.
"""

# The formats ``pulsed import`` reads. Here, not in .run: the command line
# names them without loading the parsers, which the daemon never needs.
KINDS = ("keepalived", "ldirectord", "piranha")
