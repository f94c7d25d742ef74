"""``pulsed status | drain | disable | enable | weight | reload``: clients of the daemon's API.

They find the API from the config file (``api.listen`` and ``api.token_file``)
unless ``--url`` / ``--token-file`` are given, and print one clear line on
failure: daemon not running, wrong token, unknown server.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_CONFIG = "/etc/pulsed/pulsed.toml"
DEFAULT_LISTEN = "127.0.0.1:9480"
DEFAULT_TOKEN_FILE = "/etc/pulsed/api-token"
EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


class ClientError(Exception):
    """One line for the operator."""


@dataclass
class Client:
    url: str
    token_file: str
    timeout: float = 5.0

    def call(self, method: str, path: str, body: Any = None, auth: bool = False) -> Any:
        """The JSON answer, or ClientError: one line for every way a call can fail
        (a bad --url, no daemon, a peer that is not pulsed, an HTTP error)."""
        data = None if body is None else json.dumps(body).encode()
        try:
            request = urllib.request.Request(self.url + path, data=data, method=method)
        except ValueError as exc:  # "unknown url type", an unclosed [ ...
            raise ClientError(f"--url {self.url}: not an http:// URL ({exc})") from None
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if auth:
            request.add_header("Authorization", f"Bearer {self._token()}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                answer = resp.read()
        except urllib.error.HTTPError as exc:
            raise ClientError(f"{exc.code}: {_error_text(exc)}") from None
        except urllib.error.URLError as exc:
            reason = getattr(exc.reason, "strerror", None) or str(exc.reason)
            raise ClientError(
                f"cannot reach the daemon at {self.url} ({reason.lower()}): is pulsed running?"
            ) from None
        except (TimeoutError, OSError, http.client.HTTPException) as exc:
            why = " ".join(str(exc).split())[:200] or type(exc).__name__
            raise ClientError(f"no usable answer from the daemon at {self.url}: {why}") from None
        except ValueError as exc:  # http.client.InvalidURL: a bad port, a space...
            raise ClientError(f"--url {self.url}: not a usable URL ({exc})") from None
        try:
            return json.loads(answer or b"null")
        except ValueError:
            raise ClientError(f"{self.url}{path} did not answer with JSON") from None

    def _token(self) -> str:
        """The token as header text. Read as the daemon reads it (pulsed.files: a FIFO
        is refused, not waited on) and sent byte for byte (latin-1 maps each byte to
        one character, and http.client sends header text as latin-1)."""
        from pulsed.files import FileProblem, read_file

        try:
            token = read_file(self.token_file, what="API token file").strip()
        except FileProblem as exc:
            raise ClientError(
                f"cannot read the {exc} (use --token-file, or run as a user who can read it)"
            ) from None
        if not token:
            raise ClientError(f"the API token file {self.token_file} is empty")
        text = token.decode("latin-1")
        if not text.isprintable():
            raise ClientError(
                f"the API token file {self.token_file} holds a control character"
                " (a token is one line of text)"
            )
        return text


def _error_text(exc: urllib.error.HTTPError) -> str:
    """The error's line, and what a config call adds: each problem with its line, the diff."""
    try:
        body = json.loads(exc.read() or b"{}")
        text = str(body.get("error") or exc.reason)
    except (ValueError, AttributeError):
        return str(exc.reason)
    for problem in body.get("errors") or []:
        line = f"line {problem.get('line')}: " if problem.get("line") else ""
        text += f"\n  {line}{problem.get('text', problem.get('message'))}"
    if body.get("diff"):
        text += "\n" + str(body["diff"]).rstrip("\n")
    return text


def api_settings(path: str) -> tuple[str, str]:
    """(api.listen, api.token_file) of the config at ``path``, read without validating
    it: ``pulsed reload`` must find the running daemon even when the new file is broken
    (the daemon then says what is wrong). The defaults when the file does not say."""
    listen, token_file = DEFAULT_LISTEN, DEFAULT_TOKEN_FILE
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return listen, token_file
    try:
        import tomli

        api = tomli.loads(text).get("api", {})
    except (ValueError, RecursionError):  # broken TOML: look for the two keys by line
        api = _api_lines(text)
    if isinstance(api, dict):
        if isinstance(api.get("listen"), str):
            listen = api["listen"]
        if isinstance(api.get("token_file"), str):
            token_file = api["token_file"]
    return listen, token_file


def _api_lines(text: str) -> dict[str, str]:
    found: dict[str, str] = {}
    section = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            section = stripped.strip("[] ")
            continue
        key, sep, value = stripped.partition("=")
        value = value.split("#")[0].strip().strip("\"'")
        if sep and section == "api" and key.strip() in ("listen", "token_file"):
            found[key.strip()] = value
    return found


def client_from_args(args: argparse.Namespace) -> Client:
    listen, token_file = api_settings(args.config)
    url = args.url or f"http://{connectable(listen)}"
    return Client(url.rstrip("/"), args.token_file or token_file)


def connectable(listen: str) -> str:
    """A wildcard listen address is reached through loopback."""
    for wildcard, loopback in (("0.0.0.0:", "127.0.0.1:"), ("[::]:", "[::1]:")):
        if listen.startswith(wildcard):
            return loopback + listen[len(wildcard) :]
    return listen


def add_admin_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add status, drain, disable, enable, weight and reload to the ``pulsed`` command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="to find the API")
    common.add_argument("--url", help="the daemon's API, e.g. http://127.0.0.1:9480")
    common.add_argument("--token-file", help="file holding the API bearer token")

    status = subparsers.add_parser(
        "status", parents=[common], help="show services, real servers, health and weights"
    )
    status.add_argument("--json", action="store_true", help="print the /status document")
    status.set_defaults(func=cmd_status)

    real_help = "SERVICE/REAL, e.g. web/10.0.0.2:80 or tcp:192.0.2.1:80/10.0.0.2:80"
    for name, text in (
        ("drain", "weight 0: no new connections, existing ones continue"),
        ("disable", "remove the real server from the IPVS table"),
        ("enable", "undo drain or disable"),
    ):
        p = subparsers.add_parser(name, parents=[common], help=text)
        p.add_argument("real", help=real_help)
        if name != "enable":
            p.add_argument(
                "--force",
                action="store_true",
                help="also when it is the service's last serving real server",
            )
        p.set_defaults(func=cmd_mode, action=name, force=False)

    weight = subparsers.add_parser(
        "weight", parents=[common], help="set a weight override, or clear it"
    )
    weight.add_argument("real", help=real_help)
    weight.add_argument("weight", help="0..65535, or 'clear' to use the configured weight")
    weight.add_argument(
        "--force", action="store_true", help="weight 0 also on the last serving real server"
    )
    weight.set_defaults(func=cmd_weight)

    reload = subparsers.add_parser(
        "reload", parents=[common], help="re-read the config file (like SIGHUP)"
    )
    reload.set_defaults(func=cmd_reload)

    director = subparsers.add_parser(
        "director", parents=[common], help="drain or undrain this director's BGP announcements"
    )
    director.add_argument("action", choices=["drain", "undrain"])
    director.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="after drain: wait up to SECONDS until no connection is left (idle)",
    )
    director.set_defaults(func=cmd_director)

    config = subparsers.add_parser(
        "config",
        parents=[common],
        help="the running config through the API: show, check, plan, apply, rollback, history",
    )
    # The same options after the verb: without a default there, so that
    # `pulsed config -c FILE show` keeps the FILE given before it (argparse
    # lets a subparser's defaults overwrite what its parent parsed).
    after = argparse.ArgumentParser(add_help=False)
    after.add_argument("-c", "--config", default=argparse.SUPPRESS, help="to find the API")
    after.add_argument("--url", default=argparse.SUPPRESS, help="the daemon's API")
    after.add_argument(
        "--token-file", default=argparse.SUPPRESS, help="file holding the API bearer token"
    )
    verbs = config.add_subparsers(metavar="ACTION", dest="action", required=True)
    verbs.add_parser("show", parents=[after], help="print the running config file")
    for verb, text in (
        ("check", "validate FILE as check-config does, on the daemon"),
        ("plan", "what FILE would change in the IPVS table and VRRP"),
        ("apply", "write FILE as the config (atomically) and reload"),
    ):
        p = verbs.add_parser(verb, parents=[after], help=text)
        p.add_argument("file", help="the new config (- for stdin)")
    back = verbs.add_parser("rollback", parents=[after], help="apply history entry N again")
    back.add_argument(
        "entry", type=history_id, metavar="N", help="an id from `pulsed config history`"
    )
    verbs.add_parser("history", parents=[after], help="the kept configs and the audit log")
    config.set_defaults(func=cmd_config)


def _run(args: argparse.Namespace, action) -> int:
    """Every client command runs here: each failure is one line and exit 1."""
    client = client_from_args(args)
    try:
        return action(client)
    except ClientError as exc:
        print(f"pulsed: {exc}", file=sys.stderr)
    except (KeyError, TypeError, AttributeError, IndexError) as exc:
        print(f"pulsed: {unexpected_answer(client.url, exc)}", file=sys.stderr)
    return EXIT_ERROR


def unexpected_answer(url: str, exc: Exception) -> str:
    """A JSON answer without what pulsed's API sends (--url names something else)."""
    return (
        f"the answer from {url} is not what pulsed's API sends"
        f" ({type(exc).__name__}: {str(exc)[:80]}): is --url a pulsed daemon of this version?"
    )


def _real_path(real: str) -> str:
    return "/api/v1/reals/" + urllib.parse.quote(real, safe="/:")


def cmd_mode(args: argparse.Namespace) -> int:
    def action(client: Client) -> int:
        path = f"{_real_path(args.real)}/{args.action}" + ("?force=1" if args.force else "")
        result = client.call("POST", path, auth=True)
        print(f"{result['key']}: {result['mode']}")
        return EXIT_OK

    return _run(args, action)


def cmd_weight(args: argparse.Namespace) -> int:
    if args.weight == "clear":
        body = None
    elif args.weight.isdigit() and int(args.weight) <= 65535:
        body = {"weight": int(args.weight)}
    else:
        print(f"pulsed: weight {args.weight!r}: expected 0..65535 or 'clear'", file=sys.stderr)
        return EXIT_USAGE

    def action(client: Client) -> int:
        path = f"{_real_path(args.real)}/weight" + ("?force=1" if args.force else "")
        if body is None:
            result = client.call("DELETE", path, auth=True)
        else:
            result = client.call("PUT", path, body, auth=True)
        shown = "configured" if result["weight_override"] is None else result["weight_override"]
        print(f"{result['key']}: weight {shown}")
        return EXIT_OK

    return _run(args, action)


def cmd_reload(args: argparse.Namespace) -> int:
    def action(client: Client) -> int:
        try:
            result = client.call("POST", "/api/v1/reload", auth=True)
        except ClientError as exc:
            print(f"pulsed: reload refused, old config kept: {exc}", file=sys.stderr)
            return EXIT_ERROR
        what = "changed" if result.get("changed") else "unchanged"
        print(f"reloaded: generation {result['generation']} ({what})")
        return EXIT_OK

    return _run(args, action)


def cmd_director(args: argparse.Namespace) -> int:
    def action(client: Client) -> int:
        result = client.call("POST", f"/api/v1/director/{args.action}", auth=True)
        if args.action == "undrain":
            print("undrained: the VIPs this director can serve are announced again")
            return EXIT_OK
        print(f"drained: routes withdrawn, {result['active_connections']} connection(s) left")
        deadline = time.monotonic() + max(0.0, args.wait)
        idle = result["idle"]
        while not idle and time.monotonic() < deadline:
            time.sleep(1.0)
            bgp = client.call("GET", "/status").get("bgp") or {}
            idle = bool(bgp.get("idle"))
            print(f"  {bgp.get('active_connections', '?')} connection(s) left", flush=True)
        print("idle: no connection left" if idle else "not idle yet")
        return EXIT_OK if idle or not args.wait else EXIT_ERROR

    return _run(args, action)


def cmd_status(args: argparse.Namespace) -> int:
    def action(client: Client) -> int:
        doc = client.call("GET", "/status")
        if args.json:
            print(json.dumps(doc, indent=2))
        else:
            print(format_status(doc))
        return EXIT_OK

    return _run(args, action)


def format_status(doc: dict[str, Any]) -> str:
    """A table like ``ipvsadm -Ln``, plus health, admin state and reasons."""
    config = doc["config"]
    lines = [
        f"pulsed {doc['version']}  role: {_roles(doc)}  config generation {config['generation']}"
        + ("" if config["last_reload_ok"] else f"  LAST RELOAD FAILED: {config['reason']}"),
        *_vrrp_warnings(doc),
        *_vip_lines(doc),
        f"kernel: {doc['reconcile']['reason']}",
        "Prot LocalAddress:Port Scheduler Flags",
        "  -> RemoteAddress:Port      Forward Weight Effective ActiveConn InActConn"
        "  Health   Admin    Reason",
    ]
    for svc in doc["services"]:
        if svc["fwmark"] is not None:
            head = f"FWM  {svc['fwmark']} {svc['scheduler']}"
        else:
            host = f"[{svc['vip']}]" if ":" in svc["vip"] else svc["vip"]
            head = f"{svc['protocol'].upper():<4} {host}:{svc['port']} {svc['scheduler']}"
        lines.append(f"{head}  ({svc['name']}: {svc['reason']})")
        if svc.get("sorry_server"):
            used = "in use" if svc.get("sorry_in_use") else "standing by"
            lines.append(f"  sorry server {svc['sorry_server']} ({used})")
        for r in svc["reals"]:
            host = f"[{r['address']}]" if ":" in r["address"] else r["address"]
            stats = r.get("stats") or {}
            effective = "-" if r["effective_weight"] is None else r["effective_weight"]
            configured = (
                r["configured_weight"]
                if r.get("weight_override") is None
                else f"{r['weight_override']} (override)"
            )
            lines.append(
                f"  -> {host + ':' + str(r['port']):<22} {_forward(r['forwarding']):<7}"
                f" {configured!s:>6} {effective!s:>9}"
                f" {stats.get('active_connections', '-')!s:>10} "
                f"{stats.get('inactive_connections', '-')!s:>9}"
                f"  {r['health']:<8} {r['mode']:<8} {r['reason']}"
            )
    return "\n".join(lines)


def _roles(doc: dict[str, Any]) -> str:
    """Each VRRP instance's role: ``VI_1 master (priority 150), VI_2 backup (priority 100)``."""
    instances = doc.get("vrrp") or ([doc["ha"]] if doc.get("ha") else [])
    if not instances:
        return "standalone (no VRRP)"
    shown = []
    for v in instances:
        priority = v.get("effective_priority", v.get("priority", "?"))
        name = f"{v['name']} " if v.get("name") else ""
        shown.append(f"{name}{v['role']} (priority {priority})")
    return ", ".join(shown)


def _vip_lines(doc: dict[str, Any]) -> list[str]:
    """Each VIP and who holds it: this router, the peer (its address), or nobody."""
    lines = []
    for v in doc.get("vrrp") or []:
        if v.get("vips_held"):
            holder = "this router"
        elif v.get("role") == "backup" and v.get("master"):
            holder = f"the peer {v['master']}"
        else:
            holder = "nobody seen from here" if v.get("role") != "master" else "this router"
        for vip in v.get("vips") or []:
            lines.append(f"VIP {vip} ({v.get('name', '')}, {v['role']}): held by {holder}")
    return lines


def _vrrp_warnings(doc: dict[str, Any]) -> list[str]:
    return [
        f"WARNING {v.get('name', '')}: {v['version_mismatch']}"
        for v in doc.get("vrrp") or []
        if v.get("version_mismatch")
    ]


def _forward(method: str) -> str:
    return {"nat": "Masq", "dr": "Route", "tunnel": "Tunnel"}.get(method, method)


def _read_new_config(name: str) -> str:
    """The new config's text: read as the daemon reads a config (without blocking on a
    FIFO, size capped), so that what is refused here would be refused there."""
    from pulsed.files import MAX_CONFIG_BYTES, FileProblem, read_file

    try:
        if name == "-":
            data = sys.stdin.buffer.read(MAX_CONFIG_BYTES + 1)
            if len(data) > MAX_CONFIG_BYTES:
                raise ClientError(f"stdin: more than {MAX_CONFIG_BYTES} bytes")
        else:
            data = read_file(name, what="config file", max_bytes=MAX_CONFIG_BYTES)
    except FileProblem as exc:
        raise ClientError(str(exc)) from None
    except OSError as exc:
        raise ClientError(f"cannot read {name}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ClientError(
            f"{name}:{line}: not UTF-8 text (byte {exc.start}); a config is UTF-8 TOML"
        ) from None


def history_id(text: str) -> int:
    """A history entry's id for argparse: a whole number from 1 up."""
    if not (text.isascii() and text.isdigit()) or int(text) < 1 or len(text) > 9:
        raise argparse.ArgumentTypeError(
            f"{text!r}: a history id is a whole number from 1 (see `pulsed config history`)"
        )
    return int(text)


def cmd_config(args: argparse.Namespace) -> int:
    def action(client: Client) -> int:
        client.timeout = max(client.timeout, 120.0)  # a reload of a large config takes a while
        verb = args.action
        if verb == "show":
            doc = client.call("GET", "/api/v1/config", auth=True)
            print(f"# {doc['path']}, generation {doc['generation']}", file=sys.stderr)
            print(doc["text"] or "", end="")
            return EXIT_OK
        if verb == "history":
            doc = client.call("GET", "/api/v1/config/history", auth=True)
            for e in doc["entries"]:
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["time"]))
                print(f"{e['id']:>4}  {when}  {e['action']:<16} {e['who']}  {e['digest'][:12]}")
            if not doc["entries"]:
                print("no config applied through the API yet")
            return EXIT_OK
        if verb == "rollback":
            result = client.call("POST", "/api/v1/config/rollback", {"id": args.entry}, auth=True)
            print(result["diff"], end="")
            print(f"rolled back to {args.entry}: generation {result['generation']}")
            return EXIT_OK
        text = _read_new_config(args.file)
        if verb == "check":
            doc = client.call("POST", "/api/v1/config/validate", {"text": text}, auth=True)
            for problem in doc["errors"]:
                line = f"line {problem['line']}: " if problem.get("line") else ""
                print(f"{line}{problem['text']}", file=sys.stderr)
            if not doc["valid"]:
                print(f"{args.file}: {len(doc['errors'])} problem(s)", file=sys.stderr)
                return EXIT_USAGE
            print(f"{args.file}: valid ({doc['services']} services, {doc['reals']} real servers)")
            return EXIT_OK
        if verb == "plan":
            doc = client.call("POST", "/api/v1/config/plan", {"text": text}, auth=True)
            for op in doc["operations"]:
                print(op)
            for line in doc["vrrp"]:
                print(f"vrrp {line}")
            if not doc["operations"] and not doc["vrrp"]:
                print("no change to the IPVS table or VRRP")
            return EXIT_OK
        result = client.call("POST", "/api/v1/config/apply", {"text": text}, auth=True)
        print(result["diff"], end="")
        print(f"applied: generation {result['generation']} (history {result['history_id']})")
        return EXIT_OK

    return _run(args, action)
