// The workspace terminal page: xterm.js and its fit add-on (pinned in package.json, served from
// node_modules) on a WebSocket to the console proxy. The one-time ticket comes in the URL fragment
// (never sent to a server), followed by "&workspace_token=<token>" when the workspace requires its
// token; both go to the proxy as WebSocket subprotocols ("ticket.<t>", "wstoken.<t>") and are removed
// from the address bar at once. Binary messages are the terminal's bytes; the page sends
// {"resize": [rows, cols]} whenever the window (and so the terminal) changes size.
import { Terminal } from "/static/vendor/@xterm/xterm/lib/xterm.mjs";
import { FitAddon } from "/static/vendor/@xterm/addon-fit/lib/addon-fit.mjs";

const stateEl = document.getElementById("state");
const detailEl = document.getElementById("detail");
const screen = document.getElementById("screen");

function show(state, detail) {
  stateEl.dataset.state = state;
  stateEl.textContent = state;
  detailEl.textContent = detail || "";
  document.body.dataset.state = state;   // for tests and styling
  document.body.dataset.detail = detail || "";
}

const parts = location.hash.slice(1).split("&");
const ticket = decodeURIComponent(parts[0] || "");
const tokenPart = parts.find((p) => p.startsWith("workspace_token="));
const workspaceToken = tokenPart ? decodeURIComponent(tokenPart.slice("workspace_token=".length)) : "";
history.replaceState(null, "", location.pathname + location.search);
const workspace = location.pathname.split("/").filter(Boolean)[1] || "";
document.title = `Terminal ${workspace.slice(0, 8)}`;
document.getElementById("title").textContent = `Workspace ${workspace}`;

const term = new Terminal({ cursorBlink: true, scrollback: 5000, fontSize: 14,
                            theme: { background: "#111111" } });
const fit = new FitAddon();
term.loadAddon(fit);
term.open(screen);
fit.fit();
window.term = term;             // for tests: the screen is term.buffer.active

if (!ticket) {
  show("refused", "This link has no ticket: ask the API for the workspace again (its workspace_url).");
} else {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const protocols = ["tty", `ticket.${ticket}`];
  if (workspaceToken) protocols.push(`wstoken.${workspaceToken}`);
  const url = `${scheme}//${location.host}${location.pathname.replace(/\/$/, "")}/ws` +
              `?rows=${term.rows}&cols=${term.cols}`;
  const ws = new WebSocket(url, protocols);
  ws.binaryType = "arraybuffer";
  let opened = false;
  show("connecting", "opening the connection");

  const encoder = new TextEncoder();
  const sendResize = () => {
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ resize: [term.rows, term.cols] }));
  };
  ws.addEventListener("open", () => { opened = true; });
  ws.addEventListener("message", (ev) => {
    if (typeof ev.data === "string") {
      const msg = JSON.parse(ev.data);
      if (msg.state === "opening") show("connecting", "starting the shell (resuming the workspace if it is stopped)");
      if (msg.state === "open") {
        show("connected", msg.resumed ? "the workspace was resumed" : "");
        sendResize();
        term.focus();
      }
      return;
    }
    term.write(new Uint8Array(ev.data));
  });
  ws.addEventListener("close", (ev) => {
    if (!opened) {
      show("refused", "The proxy refused the connection: the link was already used or expired. " +
           "Ask for the workspace again to get a new link.");
    } else {
      show("disconnected", ev.reason || (ev.wasClean ? "The connection was closed." :
                                                       "The connection to the console proxy was lost."));
    }
  });
  term.onData((data) => { if (ws.readyState === WebSocket.OPEN) ws.send(encoder.encode(data)); });
  term.onBinary((data) => {
    if (ws.readyState === WebSocket.OPEN) ws.send(Uint8Array.from(data, (c) => c.charCodeAt(0)));
  });
  term.onResize(sendResize);
  window.addEventListener("resize", () => fit.fit());
}
