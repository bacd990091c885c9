"""Many openai-python streams in a row, one process (config: llm, count):
each stream's events as the SDK yields them and when each arrived, for the
test that every stream is recorded and replayed with its gaps."""

from openai import OpenAI

from common import Calls, chat_request, config

cfg = config()
client = OpenAI(
    base_url=f"{cfg['llm']}/v1", api_key="sk-test", max_retries=0, timeout=20
)
calls = Calls()


def start(i):
    def run():
        stream = client.chat.completions.create(**chat_request(f"Stream {i}", True))
        return stream.response.status_code, stream.response.headers, stream

    return run


def events(stream):
    for chunk in stream:
        yield chunk.to_json(indent=None)


for i in range(cfg["count"]):
    calls.stream(f"stream_{i}", start(i), events)
calls.emit()
