"""Client matrix row: httpx, over HTTP/1.1 or (config "http2") HTTP/2 after
CONNECT, configured only by HTTP(S)_PROXY and SSL_CERT_FILE."""

import httpx

from common import Calls, config

cfg = config()
tls, plain = cfg["httpbin"], cfg["httpbin_plain"]
calls = Calls()
client = httpx.Client(http2=cfg["http2"], timeout=20)


def call(method, url, **kwargs):
    def run():
        r = client.request(method, url, **kwargs)
        return r.status_code, r.headers, r.content, r.http_version

    return run


calls.plain("get", call("GET", f"{tls}/anything/httpx?q=1"))
calls.plain("post_json", call("POST", f"{tls}/anything/httpx", json={"a": 1}))
calls.plain("gzip", call("GET", f"{tls}/gzip"))
calls.plain("plain_http", call("GET", f"{plain}/anything/httpx-plain"))
calls.emit()
