"""Tables used by the kernel tests, with what ipvsadm should print for them."""

from __future__ import annotations

from socket import AF_INET6

from pulsed.model import (
    SVC_F_ONEPACKET,
    SVC_F_SCHED1,
    SVC_F_SCHED2,
    Dest,
    Forwarding,
    Service,
    ServiceKey,
    Table,
)

NAT, DR, TUN = Forwarding.NAT, Forwarding.DR, Forwarding.TUNNEL


def tcp(address: str, port: int) -> ServiceKey:
    return ServiceKey.for_address("tcp", address, port)


# Each entry: a service and the `ipvsadm -Sn` lines it must produce.
EVERY_FIELD: list[tuple[Service, list[str]]] = [
    (
        Service(
            tcp("192.0.2.10", 80),
            "rr",
            dests=(
                Dest("10.1.0.1", 80, 5, NAT, 100, 10),
                Dest("10.1.0.2", 8080, 0, NAT),
                Dest("10.1.0.3", 80, 65535, DR, 7, 0),
                Dest("10.1.0.4", 80, 2, TUN),
            ),
        ),
        [
            "-A -t 192.0.2.10:80 -s rr",
            "-a -t 192.0.2.10:80 -r 10.1.0.1:80 -m -w 5",
            "-a -t 192.0.2.10:80 -r 10.1.0.2:8080 -m -w 0",
            "-a -t 192.0.2.10:80 -r 10.1.0.3:80 -g -w 65535",
            "-a -t 192.0.2.10:80 -r 10.1.0.4:80 -i -w 2 --tun-type ipip",
        ],
    ),
    (
        Service(
            ServiceKey.for_address("udp", "2001:db8::1", 53),
            "wlc",
            flags=SVC_F_ONEPACKET,
            timeout=300,
            netmask=64,
            dests=(Dest("2001:db8::2", 53, 1, TUN), Dest("10.9.9.9", 53, 3, TUN)),
        ),
        [
            "-A -u [2001:db8::1]:53 -s wlc -p 300 -M 64 -o",
            "-a -u [2001:db8::1]:53 -r [2001:db8::2]:53 -i -w 1 --tun-type ipip",
            "-a -u [2001:db8::1]:53 -r 10.9.9.9:53 -i -w 3 --tun-type ipip",
        ],
    ),
    (
        Service(
            ServiceKey.for_fwmark(7),
            "sh",
            flags=SVC_F_SCHED1 | SVC_F_SCHED2,
            timeout=60,
            netmask=24,
            dests=(Dest("10.1.0.5", 0, 3, DR),),
        ),
        [
            "-A -f 7 -s sh -p 60 -M 255.255.255.0 -b sh-fallback,sh-port",
            "-a -f 7 -r 10.1.0.5:0 -g -w 3",
        ],
    ),
    (
        Service(
            ServiceKey.for_fwmark(8, AF_INET6),
            "mh",
            flags=SVC_F_SCHED1 | SVC_F_SCHED2,
            timeout=1,
            netmask=128,
            dests=(Dest("2001:db8::7", 0, 1, DR),),
        ),
        [
            "-A -f 8 -6 -s mh -p 1 -b mh-fallback,mh-port",
            "-a -f 8 -6 -r [2001:db8::7]:0 -g -w 1",
        ],
    ),
    (
        Service(ServiceKey.for_address("sctp", "192.0.2.11", 9), "mh"),
        ["-A --sctp-service 192.0.2.11:9 -s mh"],
    ),
    (
        Service(tcp("192.0.2.12", 443), "wrr", timeout=3600, netmask=32),
        ["-A -t 192.0.2.12:443 -s wrr -p 3600"],
    ),
    (
        Service(tcp("192.0.2.12", 444), "lc", timeout=10, netmask=0),
        ["-A -t 192.0.2.12:444 -s lc -p 10 -M 0.0.0.0"],
    ),
    (
        Service(
            tcp("2001:db8::10", 8443),
            "sed",
            netmask=128,
            dests=(Dest("2001:db8::11", 443, 9, NAT, 50, 40),),
        ),
        [
            "-A -t [2001:db8::10]:8443 -s sed",
            "-a -t [2001:db8::10]:8443 -r [2001:db8::11]:443 -m -w 9",
        ],
    ),
]

# One service per scheduler the stock kernel ships (twos arrived after 6.1).
SCHEDULERS = ["rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "mh", "fo", "ovf"]


def every_field_table() -> Table:
    services = [svc for svc, _ in EVERY_FIELD]
    services += [
        Service(tcp("192.0.2.20", 1000 + i), name, dests=(Dest("10.2.0.1", 80, 1, NAT),))
        for i, name in enumerate(SCHEDULERS)
    ]
    return Table.of(services)


def every_field_rules() -> list[str]:
    lines = [line for _, rules in EVERY_FIELD for line in rules]
    for i, name in enumerate(SCHEDULERS):
        lines.append(f"-A -t 192.0.2.20:{1000 + i} -s {name}")
        lines.append(f"-a -t 192.0.2.20:{1000 + i} -r 10.2.0.1:80 -m -w 1")
    return sorted(lines)


def web_table(weight: int = 1, scheduler: str = "wlc") -> Table:
    """Two small services pulsed owns in the tamper and restart tests."""
    return Table.of(
        [
            Service(
                tcp("192.0.2.30", 80),
                scheduler,
                dests=(Dest("10.3.0.1", 80, weight, NAT), Dest("10.3.0.2", 80, 1, NAT)),
            ),
            Service(
                ServiceKey.for_address("udp", "192.0.2.30", 53),
                "rr",
                dests=(Dest("10.3.0.3", 53, 1, DR),),
            ),
        ]
    )
