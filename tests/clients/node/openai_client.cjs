// Client matrix row: the openai npm SDK, given undici's fetch with an
// EnvHttpProxyAgent dispatcher (the SDK uses the global fetch, which ignores
// HTTPS_PROXY on Node 20), trusting cacheow's CA by NODE_EXTRA_CA_CERTS.
'use strict';

const { OpenAI } = require('openai');
const { fetch, EnvHttpProxyAgent } = require('undici');
const { Calls, config, chatRequest } = require('./common.cjs');

const cfg = config();
const client = new OpenAI({
  baseURL: `${cfg.llm}/v1`,
  apiKey: 'sk-test',
  // No retries: a failed replay must show as a failure.
  maxRetries: 0,
  timeout: 20000,
  fetch,
  fetchOptions: { dispatcher: new EnvHttpProxyAgent() },
});
const calls = new Calls();

(async () => {
  await calls.plain('nonstream', async () => {
    const response = await client.chat.completions.create(chatRequest('Say hello', false)).asResponse();
    const body = await response.clone().json();
    if (body.object !== 'chat.completion') throw new Error(`not a chat.completion: ${JSON.stringify(body)}`);
    return response;
  });
  await calls.stream('stream', async () => {
    const { data, response } = await client.chat.completions
      .create(chatRequest('Stream a greeting', true))
      .withResponse();
    async function* events() {
      for await (const chunk of data) yield JSON.stringify(chunk);
    }
    return [response, events()];
  });
  calls.emit();
})();
