"""Many-instance routers on the namespace pair of lab/ha_pair.py: pulsed configs with
[[vrrp]] tables (and sync groups), keepalived configs with several vrrp_instance blocks, and
starting either from such a file. Needs root (the pair's namespaces)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

from lab.ha_pair import HaPair, Proc, netns_exec, toml_value

VIP_A = "192.0.2.100"
VIP_B = "192.0.2.101"
VIP_C = "192.0.2.102"


def instance(lab: HaPair, i: int, name: str, vrid: int, vip: str, **kw: Any) -> dict:
    base = {
        "name": name,
        "interface": lab.ifname(i),
        "vrid": vrid,
        "priority": 100,
        "advert_interval": "100ms",
        "virtual_addresses": [f"{vip}/24"],
        "garp_count": 3,
        "track_interval": "50ms",
    }
    base.update(kw)
    return base


def write_pulsed(
    lab: HaPair, i: int, instances: list[dict], groups: list[dict] = (), tag: str = ""
) -> str:
    lines: list[str] = []
    for inst in instances:
        lines.append("[[vrrp]]")
        nested = []
        for k, v in inst.items():
            if isinstance(v, dict):
                nested.append((k, v))
            else:
                lines.append(f"{k} = {toml_value(v)}")
        for k, table in nested:
            lines.append(f"[vrrp.{k}]")
            lines.extend(f"{kk} = {toml_value(vv)}" for kk, vv in table.items())
    for g in groups:
        lines.append("[[vrrp_sync_group]]")
        lines.extend(f"{k} = {toml_value(v)}" for k, v in g.items())
    path = os.path.join(lab.dir, f"r{i + 1}{tag}.toml")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


async def start_pulsed(lab: HaPair, i: int, conf: str, wait_ready: bool = True) -> Proc:
    status = os.path.join(lab.dir, f"r{i + 1}.status.json")
    log = open(os.path.join(lab.dir, f"r{i + 1}.log"), "ab")  # noqa: SIM115
    proc = await asyncio.create_subprocess_exec(
        *netns_exec(lab.routers[i], sys.executable, "-m", "pulsed.ha", conf, "--events",
                    "--status-file", status),
        stdout=asyncio.subprocess.PIPE,
        stderr=log,
    )  # fmt: skip
    log.close()
    p = Proc(f"pulsed-r{i + 1}", lab.routers[i], proc, status_file=status, log=log.name)
    p.start_reader()
    lab.procs.append(p)
    if wait_ready:
        await p.wait_event(lambda e: e.get("event") == "ready")
    return p


async def reload(p: Proc, conf_src: str, conf_dst: str) -> None:
    """Replace the router's config file with ``conf_src`` and SIGHUP it; wait for the reload."""
    os.replace(conf_src, conf_dst)
    mark = len(p.events)
    p.kill(signal.SIGHUP)
    ev = await p.wait_event(lambda e: e.get("event", "").startswith("reload"), start=mark)
    assert ev["event"] == "reloaded", ev


def keepalived_instance(
    name: str,
    vrid: int,
    priority: int,
    vip: str,
    *,
    interface: str,
    password: str = "1234",
    version: int | None = None,
    advert_int: float = 1,
) -> str:
    """A vrrp_instance block as a stock config has it: no vrrp_version (VRRPv2), PASS auth."""
    auth = (
        f"authentication {{\n    auth_type PASS\n    auth_pass {password}\n  }}" if password else ""
    )
    return f"""vrrp_instance {name} {{
  state BACKUP
  interface {interface}
  virtual_router_id {vrid}
  priority {priority}
  advert_int {advert_int:g}
  {f"version {version}" if version else ""}
  {auth}
  virtual_ipaddress {{
    {vip}/24
  }}
}}
"""


async def start_keepalived(lab: HaPair, i: int, blocks: list[str]) -> Proc:
    p = await lab.start_keepalived(i, config=lab.write_keepalived_config(i, "".join(blocks)))
    await lab.wait_for(lambda: len(lab.keepalived_pids(i)) == 2)
    return p


def vips_on(lab: HaPair, i: int) -> set[str]:
    return set(lab.vips(i))


def by_name(status: dict, name: str) -> dict:
    return next(s for s in status["instances"] if s["name"] == name)


def role_events(p: Proc, name: str, start: int = 0) -> list[dict]:
    return [e for e in p.events[start:] if e.get("event") == "role" and e.get("instance") == name]


def became(name: str, role: str, reason_part: str = ""):
    return lambda e: (
        e.get("event") == "role"
        and e.get("instance") == name
        and e["new"] == role
        and reason_part in e["reason"]
    )


def applied(name: str, role: str):
    return lambda e: e.get("event") == "applied" and e["instance"] == name and e["role"] == role
