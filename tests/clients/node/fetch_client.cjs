// Client matrix row: Node fetch from undici with EnvHttpProxyAgent, the
// dispatcher that reads HTTP(S)_PROXY and NO_PROXY (Node 20's built-in fetch
// ignores them), trusting cacheow's CA through NODE_EXTRA_CA_CERTS.
'use strict';

const { fetch, EnvHttpProxyAgent } = require('undici');
const { Calls, config, chatRequest } = require('./common.cjs');

const cfg = config();
const dispatcher = new EnvHttpProxyAgent();
const calls = new Calls();
const json = (value) => ({
  method: 'POST',
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify(value),
  dispatcher,
});

(async () => {
  await calls.plain('get', () => fetch(`${cfg.httpbin}/anything/undici?q=1`, { dispatcher }));
  await calls.plain('post_json', () => fetch(`${cfg.httpbin}/anything/undici`, json({ a: 1 })));
  await calls.plain('plain_http', () => fetch(`${cfg.httpbin_plain}/anything/undici-plain`, { dispatcher }));
  // A stream read whole: its chunking on the wire is not the client's to keep.
  await calls.plain('sse_bytes', () =>
    fetch(`${cfg.llm}/v1/chat/completions`, json(chatRequest('Stream over fetch', true))),
  );
  calls.emit();
})();
