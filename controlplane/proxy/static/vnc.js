// The server console page: noVNC (pinned in package.json, served from node_modules) on a WebSocket
// that this page opens itself, so that it can show the proxy's close reason. The one-time ticket comes
// in the URL fragment (never sent to a server) and goes to the proxy as the subprotocol
// "ticket.<ticket>"; it is removed from the address bar at once.
import RFB from "/static/vendor/@novnc/novnc/core/rfb.js";

const stateEl = document.getElementById("state");
const detailEl = document.getElementById("detail");
const screen = document.getElementById("screen");

function show(state, detail) {
  stateEl.dataset.state = state;
  stateEl.textContent = state;
  detailEl.textContent = detail || "";
  document.body.dataset.state = state;   // for tests and styling
}

const REASONS = {
  4001: "The server stopped.",
  4002: "The VNC server closed the connection.",
  4003: "The console spoke an unexpected protocol.",
};

const ticket = decodeURIComponent(location.hash.slice(1));
history.replaceState(null, "", location.pathname + location.search);
const server = location.pathname.split("/").filter(Boolean)[1] || "";
document.title = `Console ${server.slice(0, 8)}`;
document.getElementById("title").textContent = `Server ${server}`;

if (!ticket) {
  show("refused", "This link has no ticket: ask the API for a new one (POST /servers/<uuid>/console).");
} else {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${scheme}//${location.host}${location.pathname.replace(/\/$/, "")}/ws`,
                           ["binary", `ticket.${ticket}`]);
  ws.binaryType = "arraybuffer";
  let opened = false;
  let closeInfo = null;
  ws.addEventListener("open", () => { opened = true; show("connecting", "logging in"); });
  ws.addEventListener("close", (ev) => { closeInfo = ev; });
  show("connecting", "opening the connection");

  const rfb = new RFB(screen, ws, {});
  rfb.scaleViewport = true;      // fit the server's screen into the window, keeping its aspect
  rfb.resizeSession = false;
  rfb.background = "#111";
  window.consoleRfb = rfb;

  rfb.addEventListener("connect", () => show("connected", ""));
  rfb.addEventListener("desktopname", (ev) => { detailEl.textContent = ev.detail.name; });
  rfb.addEventListener("disconnect", (ev) => {
    // The socket's close event may come a moment after noVNC's: wait for it to read the reason.
    setTimeout(() => {
      if (!opened) {
        show("refused", "The proxy refused the connection: the link was already used or expired, " +
             "or the server is not running. Ask for a new console link.");
      } else if (closeInfo && REASONS[closeInfo.code]) {
        show("disconnected", REASONS[closeInfo.code]);
      } else if (closeInfo && closeInfo.reason) {
        show("disconnected", closeInfo.reason);
      } else {
        show("disconnected", ev.detail.clean ? "The connection was closed." :
             "The connection to the console proxy was lost.");
      }
    }, 50);
  });
  rfb.addEventListener("securityfailure", (ev) => {
    show("disconnected", `Security negotiation failed: ${ev.detail.reason || ev.detail.status}`);
  });
}
