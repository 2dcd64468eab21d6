"""Render envoy/envoy.yaml for other ports and paths, so tests and the launcher bind free ports without a second config.

The committed envoy/envoy.yaml is itself a valid config with the local defaults. Each line that ends in a
`# @name` marker holds one knob; rendering rewrites only those values, so the template stays the single source of
the routing, retry, timeout and health-check policy.
"""

import argparse
import json
import re
from collections.abc import Sequence
from pathlib import Path

from llmorch_common.constants import ENVOY_ADMIN_PORT, ENVOY_PORT, ORCHESTRATOR_PORT

REPO_ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_PATH = REPO_ROOT / "envoy" / "envoy.yaml"
DEFAULT_WEB_DIR = REPO_ROOT / "web" / "dist"

# `key: value  # @marker` (value may be a flow mapping such as `{ filename: web/dist/app.js }`).
_MARKED_LINE = re.compile(r"^(?P<head>.*?:\s*)(?P<value>\S.*?)(?P<tail>\s+# @(?P<marker>\w+))$")
_MARKERS = {"listen_port", "admin_port", "orchestrator_host", "orchestrator_port", "web_dir", "listen_origin"}


def render(
    orchestrator_port: int = ORCHESTRATOR_PORT,
    listen_port: int = ENVOY_PORT,
    admin_port: int = ENVOY_ADMIN_PORT,
    web_dir: str | Path = DEFAULT_WEB_DIR,
    orchestrator_host: str = "127.0.0.1",
    more_orchestrator_ports: Sequence[int] = (),
    tls: tuple[str | Path, str | Path] | None = None,
) -> str:
    """Return envoy.yaml with the given ports, upstream host and console directory (made absolute).

    `more_orchestrator_ports` adds API replicas on the same host to the orchestrator cluster: Envoy balances over
    them and health-checks each, with the template's one policy. `tls` is (certificate chain, private key): the
    public listener then speaks only TLS, and its own origin in the CORS policy becomes https."""
    web_path = Path(web_dir).resolve()
    values = {
        "listen_port": str(listen_port),
        "admin_port": str(admin_port),
        "orchestrator_host": orchestrator_host,
        "orchestrator_port": str(orchestrator_port),
    }
    seen: set[str] = set()
    lines = []
    for line in TEMPLATE_PATH.read_text().splitlines():
        match = _MARKED_LINE.match(line)
        if match and match["marker"] in _MARKERS:
            marker = match["marker"]
            seen.add(marker)
            value = match["value"]
            if marker in values:
                value = values[marker]
            elif marker == "web_dir":
                value = re.sub(r"filename:\s*([^\s}]+)", lambda m: f"filename: {web_path / Path(m[1]).name}", value)
            elif marker == "listen_origin":
                value = re.sub(r":\d+$", f":{listen_port}", value)
                if tls:
                    value = value.replace("http://", "https://", 1)
            line = f"{match['head']}{value}{match['tail']}"
        lines.append(line)
    missing = _MARKERS - seen
    if missing:
        raise ValueError(f"{TEMPLATE_PATH} lost its render markers: {sorted(missing)}")
    lines = _more_endpoints(lines, more_orchestrator_ports)
    return "\n".join(_with_tls(lines, *tls) if tls else lines) + "\n"


def _with_tls(lines: list[str], cert: str | Path, key: str | Path) -> list[str]:
    """Give the public listener's one filter chain a TLS transport socket. ALPN offers h2 (native gRPC) and
    http/1.1 (gRPC-Web from browsers), which the connection manager's `codec_type: AUTO` then serves as before."""
    listener = lines.index("    - name: public") if "    - name: public" in lines else None
    chain = next((i for i in range(listener or 0, len(lines)) if lines[i].strip() == "- filters:"), None)
    if listener is None or chain is None:
        raise ValueError(f"{TEMPLATE_PATH}: no `- name: public` listener with a `- filters:` chain to put TLS on")
    indent = lines[chain][: lines[chain].index("-")]
    socket = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "common_tls_context": {
                "alpn_protocols": ["h2", "http/1.1"],
                "tls_certificates": [
                    {
                        "certificate_chain": {"filename": str(Path(cert).absolute())},
                        "private_key": {"filename": str(Path(key).absolute())},
                    }
                ],
            },
        },
    }
    head = f"{indent}- transport_socket: {json.dumps(socket)}"  # JSON is YAML flow style: one line, no anchors
    return [*lines[:chain], head, f"{indent}  filters:", *lines[chain + 1 :]]


def _more_endpoints(lines: list[str], ports: Sequence[int]) -> list[str]:
    """Repeat the orchestrator cluster's one `- endpoint:` block (it ends at the @orchestrator_port line) per port."""
    if not ports:
        return lines
    end = next(i for i, line in enumerate(lines) if line.endswith("# @orchestrator_port"))
    start = max(i for i in range(end) if lines[i].strip() == "- endpoint:")
    block = lines[start : end + 1]
    copies = []
    for port in ports:
        copies += [*block[:-1], re.sub(r"port_value:\s*\d+", f"port_value: {port}", block[-1])]
    return [*lines[: end + 1], *copies, *lines[end + 1 :]]


def write_config(
    path: str | Path,
    orchestrator_port: int = ORCHESTRATOR_PORT,
    listen_port: int = ENVOY_PORT,
    admin_port: int = ENVOY_ADMIN_PORT,
    web_dir: str | Path = DEFAULT_WEB_DIR,
    orchestrator_host: str = "127.0.0.1",
    more_orchestrator_ports: Sequence[int] = (),
    tls: tuple[str | Path, str | Path] | None = None,
) -> Path:
    """Write a rendered config to `path` (parents created) and return the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(
        render(orchestrator_port, listen_port, admin_port, web_dir, orchestrator_host, more_orchestrator_ports, tls)
    )
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", help="where to write the rendered envoy.yaml")
    parser.add_argument("--orchestrator-host", default="127.0.0.1")
    parser.add_argument("--orchestrator-port", type=int, default=ORCHESTRATOR_PORT)
    parser.add_argument("--listen-port", type=int, default=ENVOY_PORT)
    parser.add_argument("--admin-port", type=int, default=ENVOY_ADMIN_PORT)
    parser.add_argument("--web-dir", default=str(DEFAULT_WEB_DIR))
    parser.add_argument("--tls-cert", help="PEM certificate chain: the public listener then serves TLS only")
    parser.add_argument("--tls-key", help="PEM private key of --tls-cert")
    args = parser.parse_args()
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    tls = (args.tls_cert, args.tls_key) if args.tls_cert else None
    write_config(
        args.output,
        args.orchestrator_port,
        args.listen_port,
        args.admin_port,
        args.web_dir,
        args.orchestrator_host,
        tls=tls,
    )


if __name__ == "__main__":
    main()
