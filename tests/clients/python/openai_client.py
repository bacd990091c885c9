"""Client matrix row: the openai Python SDK against an OpenAI-compatible
server over TLS with a private CA, through HTTPS_PROXY (CONNECT) and
trusting cacheow's CA by SSL_CERT_FILE (or, config "reverse", with a
reverse listener as base URL): a non-streaming completion, a streaming one
and an async streaming one. The two streams send the same request, so any
recorded stream is the right answer to either."""

import asyncio

from openai import AsyncOpenAI, OpenAI

from common import Calls, chat_request, config

cfg = config()
# "reverse": no proxy in the environment, cacheow's reverse listener as base URL.
base_url = f"{cfg['llm_reverse'] if cfg.get('reverse') else cfg['llm']}/v1"
# Internal: no retries, so a failed replay shows as a failure, not as a
# second request the counters would have to explain.
options = {"base_url": base_url, "api_key": "sk-test", "max_retries": 0, "timeout": 20}
calls = Calls()
client = OpenAI(**options)


def nonstream():
    raw = client.chat.completions.with_raw_response.create(**chat_request("Say hello", False))
    completion = raw.parse()  # raises unless it is a chat.completion
    assert completion.object == "chat.completion", completion
    return raw.status_code, raw.headers, raw.content, raw.http_response.http_version


def stream_start():
    stream = client.chat.completions.create(**chat_request("Stream a greeting", True))
    return stream.response.status_code, stream.response.headers, stream


def stream_events(stream):
    for chunk in stream:
        yield chunk.to_json(indent=None)


async def astream_start():
    stream = await AsyncOpenAI(**options).chat.completions.create(
        **chat_request("Stream a greeting", True)
    )
    return stream.response.status_code, stream.response.headers, stream


async def astream_events(stream):
    async for chunk in stream:
        yield chunk.to_json(indent=None)


calls.plain("nonstream", nonstream)
calls.stream("stream", stream_start, stream_events)
asyncio.run(calls.stream_async("async_stream", astream_start, astream_events))
calls.emit()
