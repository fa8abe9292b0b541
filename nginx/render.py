#!/usr/bin/env python3
"""Render nginx/nginx.conf.template into a config Nginx can load (standard library only).

    python3 nginx/render.py --preset compose --out nginx/nginx.compose.conf
    python3 nginx/render.py --prefix /tmp/shop-nginx --http-listen 127.0.0.1:18080 \\
        --https-listen 127.0.0.1:18443 --cert cert.pem --key key.pem \\
        --upstream 127.0.0.1:18101 --upstream 127.0.0.1:18102 --out /tmp/shop-nginx/nginx.conf
    nginx -t -p /tmp/shop-nginx -c /tmp/shop-nginx/nginx.conf
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent / "nginx.conf.template"

# Docker Compose: two or more `app` replicas behind the name `app`, looked up again through the
# container's DNS server (the Nginx image's entrypoint fills in NGINX_LOCAL_RESOLVERS) every few
# seconds, so a replica that is removed, recreated or added is seen without a reload; certificates
# mounted at /etc/nginx/certs.
PRESETS: dict[str, dict[str, object]] = {
    "compose": {
        "user": "nginx",
        "prefix": "/var/cache/nginx",
        "error_log": "/dev/stderr",
        "access_log": "/dev/stdout",
        "http_listen": "80",
        "https_listen": "443",
        "status_listen": "8081",
        "https_port": 443,
        "cert": "/etc/nginx/certs/fullchain.pem",
        "key": "/etc/nginx/certs/privkey.pem",
        "upstream": ["app:8000"],
        "resolver": "${NGINX_LOCAL_RESOLVERS}",
        "http2": "on",
    },
}

DEFAULTS: dict[str, object] = {
    "user": None,
    "prefix": "/var/cache/nginx",
    "error_log": None,
    "access_log": None,
    "http_listen": "127.0.0.1:8080",
    "https_listen": "127.0.0.1:8443",
    "status_listen": "127.0.0.1:8081",
    "https_port": None,
    "cert": None,
    "key": None,
    "upstream": ["127.0.0.1:8000"],
    "rate": 100,
    "burst": 200,
    "max_fails": 1,
    "fail_timeout": 5,
    "micro_cache_seconds": 5,
    # None: the upstream servers are resolved once, at start. An address (or several): a single
    # upstream name is looked up through it again every `resolver_valid` seconds.
    "resolver": None,
    "resolver_valid": 5,
    # "on": `http2 on;` (Nginx 1.25.1 and later); "listen": the older `listen ... http2` form;
    # "auto": whichever the `nginx` on this machine understands (`on` when there is none).
    "http2": "auto",
}

HTTP2_DIRECTIVE_SINCE = (1, 25, 1)


def _local_nginx_version() -> tuple[int, ...] | None:
    nginx = shutil.which("nginx") or next(
        (path for path in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(path).exists()), None
    )
    if nginx is None:
        return None
    result = subprocess.run([nginx, "-v"], capture_output=True, text=True, timeout=10, check=False)  # noqa: S603
    found = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", result.stderr + result.stdout)
    return tuple(int(part) for part in found.groups()) if found else None


def _http2_style(setting: str) -> str:
    if setting == "auto":
        version = _local_nginx_version()
        return "listen" if version is not None and version < HTTP2_DIRECTIVE_SINCE else "on"
    if setting not in {"on", "listen"}:
        raise ValueError(f"http2 is 'on', 'listen' or 'auto', not {setting!r}")
    return setting


def _port_of(listen: str) -> int:
    return int(listen.rsplit(":", 1)[-1])


def render(**params: object) -> str:
    """The config text for these parameters (see DEFAULTS); unknown placeholders are an error."""
    values = {**DEFAULTS, **{key: value for key, value in params.items() if value is not None}}
    prefix = str(values["prefix"]).rstrip("/")
    https_port = values["https_port"] or _port_of(str(values["https_listen"]))
    cert = values["cert"] or f"{prefix}/tls/fullchain.pem"
    key = values["key"] or f"{prefix}/tls/privkey.pem"
    upstreams = values["upstream"]
    if isinstance(upstreams, str):
        upstreams = [upstreams]
    servers = "\n".join(
        f"        server {server} max_fails={values['max_fails']} fail_timeout={values['fail_timeout']}s;"
        for server in upstreams  # type: ignore[union-attr]
    )
    resolver = values["resolver"]
    if resolver and len(upstreams) != 1:  # type: ignore[arg-type]
        raise ValueError("a resolver re-resolves one upstream name (every replica behind it), not a list")
    http2 = _http2_style(str(values["http2"]))
    fills = {
        "USER_DIRECTIVE": f"user {values['user']};" if values["user"] else "# (no `user`: workers run as the master)",
        "PREFIX": prefix,
        "ERROR_LOG": values["error_log"] or f"{prefix}/error.log",
        "ACCESS_LOG": values["access_log"] or f"{prefix}/access.log",
        "HTTP_LISTEN": values["http_listen"],
        "HTTPS_LISTEN": values["https_listen"],
        "STATUS_LISTEN": values["status_listen"],
        "HTTPS_PORT_SUFFIX": "" if int(https_port) == 443 else f":{https_port}",  # type: ignore[call-overload]
        "CERT": cert,
        "KEY": key,
        "UPSTREAM_SERVERS": servers,
        "RESOLVER": f"    resolver {resolver} valid={values['resolver_valid']}s ipv6=off;\n    resolver_timeout 2s;"
        if resolver
        else "    # (no `resolver`: the upstream servers are resolved once, at start)",
        # A variable in proxy_pass makes Nginx resolve the name at request time (the upstream block
        # above then stands unused); every address it returns is a server to balance and retry over.
        "UPSTREAM_VARIABLE": f"        set $shop_app_address {upstreams[0]};" if resolver else "",  # type: ignore[index]
        "PROXY_PASS": "http://$shop_app_address" if resolver else "http://shop_app",
        "LISTEN_HTTP2": " http2" if http2 == "listen" else "",
        "HTTP2": "        http2 on;" if http2 == "on" else "",
        "RATE_PER_SECOND": values["rate"],
        "RATE_BURST": values["burst"],
        "MICRO_CACHE_SECONDS": values["micro_cache_seconds"],
    }
    text = TEMPLATE.read_text()
    for name, value in fills.items():
        text = text.replace(f"@{name}@", str(value))
    left = re.findall(r"@[A-Z_]+@", text)
    if left:
        raise ValueError(f"unfilled placeholders in {TEMPLATE.name}: {sorted(set(left))}")
    return f"# Generated by nginx/render.py from {TEMPLATE.name}: edit the template, not this file.\n{text}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), help="a named set of parameters (others override it)")
    parser.add_argument("--out", type=Path, help="write here (default: stdout)")
    parser.add_argument("--user", help="`user` directive for the workers (only when the master runs as root)")
    parser.add_argument("--prefix", help="directory for the pid file, temp files, cache and default logs")
    parser.add_argument("--error-log")
    parser.add_argument("--access-log")
    parser.add_argument("--http-listen", help="address:port (or port) of the redirecting HTTP server")
    parser.add_argument("--https-listen", help="address:port (or port) of the TLS server")
    parser.add_argument("--status-listen", help="address:port (or port) of stub_status for the exporter")
    parser.add_argument("--https-port", type=int, help="public HTTPS port in redirects (default: from --https-listen)")
    parser.add_argument("--cert", help="certificate chain (default: PREFIX/tls/fullchain.pem)")
    parser.add_argument("--key", help="private key (default: PREFIX/tls/privkey.pem)")
    parser.add_argument("--upstream", action="append", help="app instance host:port; repeat for each")
    parser.add_argument("--rate", type=int, help="requests per second per client address (limit_req)")
    parser.add_argument("--burst", type=int, help="burst allowed over the rate")
    parser.add_argument("--micro-cache-seconds", type=int, help="how long a catalog page is served from Nginx")
    parser.add_argument("--resolver", help="DNS server(s) to look the one upstream name up again through")
    parser.add_argument("--http2", choices=["on", "listen", "auto"], help="HTTP/2 syntax (default: auto)")
    args = vars(parser.parse_args(argv))
    preset = PRESETS.get(args.pop("preset") or "", {})
    out = args.pop("out")
    text = render(**{**preset, **{key: value for key, value in args.items() if value is not None}})
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
