"""The classic LVS lab: namespaces, real servers, a client and a load generator.

Nothing here imports pulsed: the lab drives it from outside, through its
command line and the kernel's IPVS table, as an operator would.
"""
