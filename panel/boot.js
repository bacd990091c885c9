// Starts the wasm app; if that fails, says so on the page instead of leaving
// "Loading…" forever. A file rather than an inline script so the panel's
// Content-Security-Policy can forbid inline scripts.
import init from '/ui/pkg/panel.js';

const boot = document.getElementById('boot');
init().then(
  () => boot.remove(),
  (e) => {
    boot.className = 'boot error';
    boot.setAttribute('role', 'alert');
    boot.textContent = 'The panel failed to start: ' + e + '. The JSON API is at /api/functions.';
  },
);
