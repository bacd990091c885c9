"""Client matrix row: aiohttp with trust_env=True (it ignores HTTP(S)_PROXY
otherwise), trusting cacheow's CA through SSL_CERT_FILE."""

import asyncio

import aiohttp

from common import Calls, config

cfg = config()
tls, plain = cfg["httpbin"], cfg["httpbin_plain"]
calls = Calls()


async def main():
    timeout = aiohttp.ClientTimeout(total=20)
    async with aiohttp.ClientSession(trust_env=True, timeout=timeout) as session:

        def call(method, url, **kwargs):
            async def run():
                async with session.request(method, url, **kwargs) as r:
                    body = await r.read()
                    version = f"HTTP/{r.version.major}.{r.version.minor}"
                    return r.status, r.headers, body, version

            return run

        await calls.plain_async("get", call("GET", f"{tls}/anything/aiohttp?q=1"))
        await calls.plain_async("post_json", call("POST", f"{tls}/anything/aiohttp", json={"a": 1}))
        await calls.plain_async("plain_http", call("GET", f"{plain}/anything/aiohttp-plain"))


asyncio.run(main())
calls.emit()
