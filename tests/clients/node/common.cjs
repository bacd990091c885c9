// What every Node row of the client matrix prints: one JSON line with each
// call's status, cacheow's headers and what the client received (see
// ../python/common.py, the same shape).
'use strict';

const config = () => JSON.parse(process.argv[2]);

class Calls {
  constructor() {
    this.calls = [];
  }

  // `fn()` resolves to a fetch Response; its body is read whole.
  async plain(name, fn) {
    const started = performance.now();
    try {
      const response = await fn();
      const body = Buffer.from(await response.arrayBuffer());
      this.calls.push({
        name,
        status: response.status,
        ...cacheow(response.headers),
        body_b64: body.toString('base64'),
        elapsed_ms: ms(started),
      });
    } catch (error) {
      this.failed(name, started, error);
    }
  }

  // `start()` resolves to [response headers owner, async iterable of events].
  async stream(name, start) {
    const started = performance.now();
    try {
      const [response, events] = await start();
      const received = [];
      const times = [];
      for await (const event of events) {
        times.push(ms(started));
        received.push(event);
      }
      this.calls.push({
        name,
        status: response.status,
        ...cacheow(response.headers),
        events: received,
        times_ms: times,
        elapsed_ms: ms(started),
      });
    } catch (error) {
      this.failed(name, started, error);
    }
  }

  failed(name, started, error) {
    const cause = error && error.cause ? `\ncause: ${error.cause.stack || error.cause}` : '';
    this.calls.push({ name, error: `${error && error.stack ? error.stack : error}${cause}`, elapsed_ms: ms(started) });
  }

  emit() {
    process.stdout.write(`${JSON.stringify({ calls: this.calls })}\n`);
  }
}

const cacheow = (headers) => ({
  source: headers.get('x-cacheow-source'),
  function: headers.get('x-cacheow-function'),
});

const ms = (started) => Math.round((performance.now() - started) * 1000) / 1000;

const chatRequest = (prompt, stream) => ({
  model: 'gpt-test',
  messages: [{ role: 'user', content: prompt }],
  stream,
});

module.exports = { Calls, config, chatRequest };
