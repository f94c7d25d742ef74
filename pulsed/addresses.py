"""Parsing of ``host:port`` text as operators write it in configs."""

from __future__ import annotations

from functools import lru_cache

from pulsed.model import normalize_address


@lru_cache(maxsize=1 << 17)
def split_host_port(text: str, default_port: int | None = None) -> tuple[str, int]:
    """``10.0.0.2:80``, ``[2001:db8::2]:80``, or a bare address with ``default_port``.

    Returns the canonical address text and the port; raises ValueError
    with a message that names what is wrong.
    """
    if not isinstance(text, str) or not text:
        raise ValueError("expected 'address:port', e.g. '10.0.0.2:80' or '[2001:db8::2]:80'")
    host, port_text = text, None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"unclosed '[' in {text!r}")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"expected ':port' after ']' in {text!r}")
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    try:
        address = normalize_address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IPv4 or IPv6 address") from None
    if port_text is None:
        if default_port is None:
            raise ValueError(f"{text!r} needs a port, e.g. '{text}:80'")
        return address, default_port
    # isascii: str.isdigit() also takes digits such as "²" that int() refuses.
    if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
        raise ValueError(f"port {port_text!r} in {text!r} is not between 1 and 65535")
    return address, int(port_text)


def join_host_port(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
