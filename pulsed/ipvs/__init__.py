"""IPVS backends: the kernel through netlink, and a kernel-faithful fake."""

from pulsed.ipvs.base import Backend, BackendError, IPVSUnavailable

__all__ = ["Backend", "BackendError", "IPVSUnavailable"]
