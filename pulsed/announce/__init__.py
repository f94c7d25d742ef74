"""Route health injection: announcing VIPs through an existing routing daemon.

Imported only when a ``[bgp]`` table is configured (``pulsed.announce.config``,
the validated section, is the one exception: the config module reads it).
"""
