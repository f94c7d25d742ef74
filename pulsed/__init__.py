"""pulsed: a load-balancer daemon for Linux Virtual Server routers."""

__version__ = "0.1.0"
