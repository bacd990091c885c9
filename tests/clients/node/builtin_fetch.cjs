// Node's built-in fetch with HTTPS_PROXY set: on Node 20 it goes straight to
// the host, which the matrix checks so docs/CLIENTS.md can say so.
'use strict';

const { Calls, config } = require('./common.cjs');

const cfg = config();
const calls = new Calls();
(async () => {
  await calls.plain('builtin_get', () => fetch(`${cfg.llm}/v1/models`));
  calls.emit();
})();
