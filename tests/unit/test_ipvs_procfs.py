"""Splitting /proc/net/ip_vs into per-service blocks (text recorded from kernel 6.1)."""

from __future__ import annotations

from socket import AF_INET, AF_INET6

import pytest

from pulsed.ipvs import procfs
from pulsed.model import ServiceKey

# `cat /proc/net/ip_vs` on Debian's 6.1 kernel after:
#   ipvsadm -A -t 10.9.9.9:80 -s sh -b sh-fallback,sh-port -p 300 -M 255.255.255.0
#   ipvsadm -a -t 10.9.9.9:80 -r 10.1.1.1:80 -g -w 3 -x 10 -y 5
#   ipvsadm -A -u [2001:db8::1]:53 -s wrr -p 60 (+ a masq real server)
#   ipvsadm -A --sctp-service 10.9.9.8:99 -s mh -b mh-port
#   ipvsadm -A -f 7 -s rr -o (+ a tunnel real server, weight 0); ipvsadm -A -f 8 -6 -s lc
KERNEL_TEXT = (
    b"IP Virtual Server version 1.2.1 (size=4096)\n"
    b"Prot LocalAddress:Port Scheduler Flags\n"
    b"  -> RemoteAddress:Port Forward Weight ActiveConn InActConn\n"
    b"TCP  0A090909:0050 sh  persistent 75000 FFFFFF00\n"
    b"  -> 0A010101:0050      Route   3      0          0         \n"
    b"UDP  [2001:0db8:0000:0000:0000:0000:0000:0001]:0035 wrr persistent 15000 80000000\n"
    b"  -> [2001:0db8:0000:0000:0000:0000:0000:0005]:0035"
    b"      Masq    1      0          0         \n"
    b"SCTP  0A090908:0063 mh  \n"
    b"FWM  00000007 rr ops \n"
    b"  -> 0A010102:0000      Tunnel  0      12         3456      \n"
    b"FWM  00000008 lc \n"
)


def test_one_block_per_service():
    blocks = procfs.blocks(KERNEL_TEXT)
    assert [procfs.head(b).split()[0] for b in blocks] == [b"TCP", b"UDP", b"SCTP", b"FWM", b"FWM"]
    assert [procfs.dest_count(b) for b in blocks] == [1, 1, 0, 1, 0]
    assert [procfs.scheduler(b) for b in blocks] == [b"sh", b"wrr", b"mh", b"rr", b"lc"]


def test_empty_table_has_no_blocks():
    assert procfs.blocks(KERNEL_TEXT[: KERNEL_TEXT.index(b"TCP")]) == []


def test_service_keys():
    heads = [procfs.head(b) for b in procfs.blocks(KERNEL_TEXT)]
    assert procfs.service_keys(heads[0]) == (ServiceKey.for_address("tcp", "10.9.9.9", 80),)
    assert procfs.service_keys(heads[1]) == (ServiceKey.for_address("udp", "2001:db8::1", 53),)
    assert procfs.service_keys(heads[2]) == (ServiceKey.for_address("sctp", "10.9.9.8", 99),)
    # the kernel does not print a fwmark service's family
    assert procfs.service_keys(heads[3]) == (
        ServiceKey.for_fwmark(7, AF_INET),
        ServiceKey.for_fwmark(7, AF_INET6),
    )


@pytest.mark.parametrize("line", [b"AH  0A000001:0000 rr ", b"TCP", b"TCP  nothex:0050 rr"])
def test_lines_it_cannot_place_raise_value_error(line):
    with pytest.raises(ValueError):
        procfs.service_keys(line)


def test_connection_counts_are_cut_from_settings_and_read_apart():
    fwm = procfs.blocks(KERNEL_TEXT)[3]
    busier = fwm.replace(b"12         3456      ", b"4000000000 0         ")
    assert busier != fwm
    assert procfs.settings_of(busier) == procfs.settings_of(fwm)
    assert procfs.connections(fwm) == {("10.1.1.2", 0): (12, 3456)}
    assert procfs.connections(busier) == {("10.1.1.2", 0): (4000000000, 0)}


def test_settings_differ_when_a_weight_does():
    tcp = procfs.blocks(KERNEL_TEXT)[0]
    assert procfs.settings_of(tcp.replace(b"Route   3 ", b"Route   4 ")) != procfs.settings_of(tcp)


def test_read_returns_the_whole_file(tmp_path):
    path = tmp_path / "ip_vs"
    path.write_bytes(KERNEL_TEXT * 20000)  # several read chunks
    assert procfs.read(str(path)) == KERNEL_TEXT * 20000
