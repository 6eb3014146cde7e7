"""Real proxies that get in a client's way, in front of test gateways.

- :func:`start_ws_refusing_proxy`: Debian HAProxy that passes plain HTTP (SSE, long-poll,
  POST) and answers every WebSocket upgrade with ``403`` before it reaches a gateway, as
  a corporate proxy with a "no WebSocket" rule does (Squid's and most filtering proxies'
  deny page is a 403 too). The client sees an HTTP answer where it wanted ``101``.
- :func:`start_buffering_proxy`: Debian nginx with ``proxy_buffering on`` and 64 KiB
  buffers, ignoring the gateway's ``X-Accel-Buffering: no`` (``proxy_ignore_headers``),
  and compressing responses (``gzip on`` for ``text/event-stream`` and JSON), without
  WebSocket forwarding (nginx's default: it does not pass ``Upgrade``, so the gateway
  answers the upgrade attempt with 426). ``proxy_buffering`` alone does not hold SSE
  back in nginx 1.22: it writes what it read from the upstream to a client that keeps
  up at once. Its gzip filter does (as compressing proxies and CDNs do): it sends
  nothing, headers included, until its 4 KiB output buffer fills or the response ends,
  so a live SSE response gives a client that sends ``Accept-Encoding: gzip`` (browsers,
  aiohttp by default) no byte for a long time. It asks the gateway for identity answers
  (``proxy_set_header Accept-Encoding ""``, as proxies that compress themselves do): an
  answer the gateway compressed already would pass through nginx's gzip filter
  unbuffered. Long-poll works through it: its answers complete.

Both return ``(proc, base_url)`` like :func:`tests.procs.start_haproxy`.
"""

from __future__ import annotations

from pathlib import Path

from tests.procs import Proc, base_env, free_port, start_haproxy, wait_port

#: The frontend rule of a proxy that does not allow WebSockets.
DENY_WEBSOCKETS = "http-request deny deny_status 403 if { hdr(upgrade) -i websocket }"


def start_ws_refusing_proxy(gateways: list[str], logdir: Path) -> tuple[Proc, str]:
    """HAProxy that forwards HTTP to ``gateways`` but refuses WebSocket upgrades (403)."""
    return start_haproxy(gateways, logdir, rules=DENY_WEBSOCKETS, name="haproxy-no-ws")


BUFFERING_NGINX_CONFIG = """\
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log {dir}/nginx-access.log;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream gateways {{
{servers}
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://gateways;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Accept-Encoding "";
            proxy_buffering on;
            proxy_buffer_size 64k;
            proxy_buffers 8 64k;
            proxy_busy_buffers_size 128k;
            proxy_ignore_headers X-Accel-Buffering;
            gzip on;
            gzip_types text/event-stream application/json;
            gzip_min_length 0;
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
        }}
    }}
}}
"""


def start_buffering_proxy(gateways: list[str], logdir: Path) -> tuple[Proc, str]:
    """nginx in front of ``gateways`` that holds live responses back (SSE included) and
    does not forward WebSocket upgrades. Runs as the test user, everything under ``logdir``."""
    port = free_port()
    root = logdir / "nginx"
    root.mkdir(exist_ok=True)
    servers = "\n".join(f"        server {url.removeprefix('http://')};" for url in gateways)
    config = root / "nginx.conf"
    config.write_text(BUFFERING_NGINX_CONFIG.format(port=port, servers=servers, dir=root))
    proc = Proc("nginx", [], base_env(), logdir,
                argv=["nginx", "-p", str(root), "-c", str(config), "-e", str(root / "stderr.log")])
    wait_port(port, proc)
    return proc, f"http://127.0.0.1:{port}"
