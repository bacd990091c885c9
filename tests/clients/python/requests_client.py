"""Client matrix row: requests, configured only by HTTP(S)_PROXY and
REQUESTS_CA_BUNDLE, against httpbin over TLS (CONNECT) and plain HTTP.
"post_json_nodelay" is the same POST with TCP_NODELAY on the proxied
socket, which urllib3 leaves off (docs/CLIENTS.md: the ~45 ms)."""

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection

from common import Calls, config

cfg = config()
tls, plain = cfg["httpbin"], cfg["httpbin_plain"]
calls = Calls()
session = requests.Session()


class NoDelayAdapter(HTTPAdapter):
    """Proxied pools get no socket options from urllib3; give them NODELAY."""

    def proxy_manager_for(self, proxy, **proxy_kwargs):
        proxy_kwargs.setdefault("socket_options", HTTPConnection.default_socket_options)
        return super().proxy_manager_for(proxy, **proxy_kwargs)


nodelay = requests.Session()
nodelay.mount("https://", NoDelayAdapter())
nodelay.mount("http://", NoDelayAdapter())


def call(method, url, via=session, **kwargs):
    def run():
        r = via.request(method, url, timeout=20, **kwargs)
        return r.status_code, r.headers, r.content, None

    return run


calls.plain("get", call("GET", f"{tls}/anything/requests?q=1"))
calls.plain("post_json", call("POST", f"{tls}/anything/requests", json={"a": 1, "b": [1, 2]}))
calls.plain(
    "post_json_nodelay",
    call("POST", f"{tls}/anything/requests-nodelay", via=nodelay, json={"a": 1, "b": [1, 2]}),
)
calls.plain("gzip", call("GET", f"{tls}/gzip"))
calls.plain("plain_http", call("GET", f"{plain}/anything/requests-plain?q=2"))
calls.emit()
