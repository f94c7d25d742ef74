"""aiohttp is imported without its client contexts reading the CA bundle, and
the environment is left as it was, so pulsed's own TLS contexts still do."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys

import pytest

PROBE = """
import json, os, ssl
before = {k: os.environ.get(k) for k in ("SSL_CERT_FILE", "SSL_CERT_DIR")}
import pulsed.aioweb
import aiohttp.connector as c
print(json.dumps({
    "env_kept": before == {k: os.environ.get(k) for k in ("SSL_CERT_FILE", "SSL_CERT_DIR")},
    "aiohttp_cas": c._SSL_CONTEXT_VERIFIED.cert_store_stats()["x509_ca"],
    "own_cas": ssl.create_default_context().cert_store_stats()["x509_ca"],
    "custom": os.environ.get("SSL_CERT_DIR"),
}))
"""


def run(env_extra: dict[str, str]) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSL_CERT_")}
    env.update(env_extra)
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


@pytest.mark.skipif(
    ssl.create_default_context().cert_store_stats()["x509_ca"] == 0,
    reason="no system CA bundle on this machine",
)
def test_aiohttp_client_contexts_hold_no_cas_and_ours_still_do():
    got = run({})
    assert got["env_kept"] is True
    assert got["aiohttp_cas"] == 0
    assert got["own_cas"] > 0
    assert got["custom"] is None


def test_an_operator_s_ca_location_is_put_back():
    got = run({"SSL_CERT_DIR": "/etc/pulsed/cas"})
    assert got["env_kept"] is True
    assert got["custom"] == "/etc/pulsed/cas"
