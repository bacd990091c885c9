"""Client matrix row: the anthropic Python SDK (its HTTP stack is the same
httpx2 as openai's) against an Anthropic-compatible server over TLS,
through HTTPS_PROXY and SSL_CERT_FILE (or, config "reverse", a reverse
listener as base URL): a message, then a streamed one."""

from anthropic import Anthropic

from common import Calls, config

cfg = config()
# "reverse": no proxy in the environment, cacheow's reverse listener as base URL.
base_url = cfg["llm_reverse"] if cfg.get("reverse") else cfg["llm"]
client = Anthropic(base_url=base_url, api_key="sk-ant-test", max_retries=0, timeout=20)
calls = Calls()
request = {
    "model": "claude-test",
    "max_tokens": 64,
    "messages": [{"role": "user", "content": "Say hello"}],
}


def message():
    raw = client.messages.with_raw_response.create(**request)
    assert raw.parse().type == "message"
    response = raw.http_response
    return response.status_code, response.headers, response.content, response.http_version


def stream_start():
    manager = client.messages.stream(**{**request, "messages": [{"role": "user", "content": "Stream"}]})
    stream = manager.__enter__()
    return stream.response.status_code, stream.response.headers, (manager, stream)


def stream_events(handle):
    manager, stream = handle
    try:
        for text in stream.text_stream:
            yield text
        yield stream.get_final_message().to_json(indent=None)
    finally:
        manager.__exit__(None, None, None)


calls.plain("message", message)
calls.stream("stream", stream_start, stream_events)
calls.emit()
