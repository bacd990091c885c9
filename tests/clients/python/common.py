"""What every Python row of the client matrix prints: one JSON line with each
call's status, cacheow's headers and what the client received, so the Rust
test can compare a recording with its replays byte for byte."""

import base64
import json
import sys
import time
import traceback


def config():
    """The row's settings: argv[1] is a JSON object written by the test."""
    return json.loads(sys.argv[1])


class Calls:
    """Collects the calls of one run; a call that raises is reported, not
    fatal, so one broken call still shows what the others got."""

    def __init__(self):
        self.calls = []

    def plain(self, name, fn):
        """`fn()` returns (status, headers, body bytes, http version or None)."""
        started = time.monotonic()
        try:
            status, headers, body, version = fn()
            self.calls.append(
                {
                    "name": name,
                    "status": status,
                    "version": version,
                    **_cacheow(headers),
                    "body_b64": base64.b64encode(body).decode(),
                    "elapsed_ms": _ms(started),
                }
            )
        except Exception:  # noqa: BLE001: the test prints it
            self.failed(name, started)

    async def plain_async(self, name, fn):
        """`plain` for a coroutine function."""
        started = time.monotonic()
        try:
            status, headers, body, version = await fn()
            self.calls.append(
                {
                    "name": name,
                    "status": status,
                    "version": version,
                    **_cacheow(headers),
                    "body_b64": base64.b64encode(body).decode(),
                    "elapsed_ms": _ms(started),
                }
            )
        except Exception:  # noqa: BLE001
            self.failed(name, started)

    def stream(self, name, start, events):
        """`start()` returns (status, headers, handle); `events(handle)`
        yields each event as text as the client library delivers it."""
        started = time.monotonic()
        try:
            status, headers, handle = start()
            received, times = [], []
            for event in events(handle):
                times.append(_ms(started))
                received.append(event)
            self.calls.append(
                {
                    "name": name,
                    "status": status,
                    **_cacheow(headers),
                    "events": received,
                    "times_ms": times,
                    "elapsed_ms": _ms(started),
                }
            )
        except Exception:  # noqa: BLE001
            self.failed(name, started)

    async def stream_async(self, name, start, events):
        """`stream` for a coroutine `start` and an async iterator `events`."""
        started = time.monotonic()
        try:
            status, headers, handle = await start()
            received, times = [], []
            async for event in events(handle):
                times.append(_ms(started))
                received.append(event)
            self.calls.append(
                {
                    "name": name,
                    "status": status,
                    **_cacheow(headers),
                    "events": received,
                    "times_ms": times,
                    "elapsed_ms": _ms(started),
                }
            )
        except Exception:  # noqa: BLE001
            self.failed(name, started)

    def failed(self, name, started):
        self.calls.append(
            {
                "name": name,
                "error": traceback.format_exc(limit=3),
                "elapsed_ms": _ms(started),
            }
        )

    def emit(self):
        print(json.dumps({"calls": self.calls}), flush=True)


def _cacheow(headers):
    return {
        "source": headers.get("x-cacheow-source"),
        "function": headers.get("x-cacheow-function"),
    }


def _ms(started):
    return round((time.monotonic() - started) * 1000.0, 3)


def chat_request(prompt, stream):
    """The chat.completions arguments every OpenAI row sends."""
    return {
        "model": "gpt-test",
        "messages": [{"role": "user", "content": prompt}],
        "stream": stream,
    }
