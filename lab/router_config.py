"""The routers' config files, as text: the lab edits copies of etc/lab*.toml, never the repo.

Plain text edits rather than a TOML round trip, so the copies keep the comments and layout
an operator reading /run/pulsed-lab sees in etc/.
"""

from __future__ import annotations

import re

from lab.netns import LabError


def without_vrrp(text: str) -> str:
    """The config with its [vrrp] table removed (the lab then holds the VIP itself)."""
    return re.sub(r"(?ms)^\[vrrp\].*?(?=^\[\[service\]\])", "", text)


def configured_weights(text: str) -> dict[str, int]:
    """Real server address -> weight, as the config declares them."""
    pairs = re.findall(r'address = "([^"]+)"\s*\nweight = (\d+)', text)
    return {addr: int(w) for addr, w in pairs}


def with_weight(text: str, address: str, old: int, new: int, path: object) -> str:
    """The config with one real server's weight changed (``path`` names it in the error)."""
    pattern = f'address = "{address}"\nweight = {old}'
    if pattern not in text:
        raise LabError(f"cannot find {address}'s weight in {path}")
    return text.replace(pattern, f'address = "{address}"\nweight = {new}')


def backup_router(text: str) -> str:
    """The master's config made the backup's: a lower priority and its own state directory."""
    text = re.sub(r"(?m)^priority = \d+", "priority = 100", text, count=1)
    return text.replace('/run/pulsed-lab/router"', '/run/pulsed-lab/router2"')
