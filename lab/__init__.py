"""The labs that run pulsed in network namespaces, as an operator would.

The classic LVS lab (``make lab``, scripts/lab): topology.py builds the
namespaces, stand.py starts and stops what runs in them (processes.py,
realserver.py, loadgen.py, watch.py), steps.py holds the steps, and
scenario.py runs them in order. ha_pair.py is the smaller lab of the HA tests
and the failover benchmark: routers and an observer on one segment.

The labs drive pulsed from outside, through its command line (or
``python -m pulsed.ha``) and the kernel; only ha_pair.py's helper processes
import pulsed, to forge VRRP packets and step a router's clock.
"""
