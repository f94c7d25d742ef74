"""Health checking: probes, rise/fall hysteresis, and turning health into weights.

Public pieces:

- ``config.CheckConfig`` / ``config.check_problems``: the ``[service.check]`` table.
- ``monitor.HealthMonitor``: schedules every probe on one event loop.
- ``state.RealHealth``: what the monitor knows about one real server.
- ``policy.plan_pool``: pure (policy, health, kernel conns, now) -> kernel weights.
"""
