// txvnc's console page: one noVNC RFB client on a WebSocket back to the
// proxy that served this page. The page opens the WebSocket itself (noVNC
// accepts a ready channel) so it can show the close code and reason the
// proxy sends, which noVNC's own events do not carry.
import RFB from "./novnc/core/rfb.js";

const status = document.getElementById("status");
const cad = document.getElementById("ctrl-alt-del");

// Close codes the proxy uses, and what to tell the user when the proxy
// gives no reason of its own.
const CLOSE_TEXT = {
  1000: "The console was closed.",
  1001: "The console service is restarting.",
  1003: "The console received data it does not accept.",
  1006: "The console could not be opened or the connection was lost. "
      + "The link may be invalid or expired: ask for a new console.",
  1009: "A message was too large for the console.",
  1011: "The console is unavailable.",
};

function setStatus(state, text) {
  status.dataset.state = state;
  status.textContent = text;
}

// The token comes from ?token=, or from noVNC's ?path=websockify?token=.
function consoleToken() {
  const params = new URLSearchParams(window.location.search);
  let token = params.get("token");
  if (!token && params.get("path")) {
    const inner = params.get("path");
    const query = inner.includes("?") ? inner.slice(inner.indexOf("?") + 1) : "";
    token = new URLSearchParams(query).get("token");
  }
  return token;
}

function websocketURL(token) {
  const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
  const base = new URL("websockify", window.location.href);
  return `${scheme}//${base.host}${base.pathname}?token=${encodeURIComponent(token)}`;
}

function start() {
  const token = consoleToken();
  if (!token) {
    setStatus("disconnected", "No console token in the address: open the console link you were given.");
    return;
  }
  let closeEvent = null;
  let desktopName = "the instance";
  const socket = new WebSocket(websocketURL(token), ["binary"]);
  socket.addEventListener("close", (e) => { closeEvent = e; });

  const rfb = new RFB(document.getElementById("screen"), socket);
  rfb.scaleViewport = true;
  rfb.resizeSession = false;
  window.txvnc = { rfb, socket };

  rfb.addEventListener("connect", () => {
    cad.disabled = false;
    setStatus("connected", `Connected to ${desktopName}`);
  });
  rfb.addEventListener("desktopname", (e) => {
    desktopName = e.detail.name;
    if (status.dataset.state === "connected") {
      setStatus("connected", `Connected to ${desktopName}`);
    }
    document.title = `${desktopName} - Console`;
  });
  rfb.addEventListener("securityfailure", (e) => {
    setStatus("disconnected", `VNC security failed: ${e.detail.reason || e.detail.status}`);
  });
  rfb.addEventListener("disconnect", () => {
    cad.disabled = true;
    // noVNC may report the disconnect before the socket's close event.
    setTimeout(() => {
      const code = closeEvent ? closeEvent.code : 1006;
      const reason = closeEvent && closeEvent.reason;
      const text = reason ? `${reason}.` : (CLOSE_TEXT[code] || `The console closed (code ${code}).`);
      setStatus("disconnected", `Disconnected: ${text}`);
      document.body.dataset.closeCode = String(code);
    }, 0);
  });
  cad.addEventListener("click", () => rfb.sendCtrlAltDel());
}

start();
