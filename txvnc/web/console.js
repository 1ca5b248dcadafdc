// txvnc's console page: one noVNC RFB client on a WebSocket back to the
// proxy that served this page. The page opens the WebSocket itself (noVNC
// accepts a ready channel) so it can show the close code and reason the
// proxy sends, read the proxy's text notices (a warning before an idle
// timeout or the session cap), and reconnect after an unexpected drop.
import RFB from "./novnc/core/rfb.js";

const status = document.getElementById("status");
const notice = document.getElementById("notice");
const cad = document.getElementById("ctrl-alt-del");
const paste = document.getElementById("paste");
const fullscreen = document.getElementById("fullscreen");

// What to tell the user for each close code when the proxy gives no reason
// of its own (txvnc/proxy/closecodes.py holds the proxy's side).
const CLOSE_TEXT = {
  1000: "The console was closed.",
  1001: "The console service is restarting.",
  1002: "The connection broke the WebSocket protocol.",
  1003: "The console received data it does not accept.",
  1006: "The console could not be opened or the connection was lost. "
      + "The link may be invalid or expired: ask for a new console.",
  1007: "The console received data it could not decode.",
  1009: "A message was too large for the console.",
  1011: "The console is unavailable.",
  1013: "The console service is busy: try again later.",
  4001: "The console's link was revoked.",
  4002: "The console was closed after a period without input.",
  4003: "The console reached its maximum session time.",
  4004: "Too many consoles are open with this link.",
  4005: "The console's VNC security negotiation failed.",
  4006: "An administrator closed the console.",
};

// Drops after which the page reconnects by itself: the service restarting
// or busy, or a connection lost after it had been open. Never after a
// revocation, an expiry, a limit or a refusal.
const RECONNECT_CODES = new Set([1001, 1013]);
const RECONNECT_AFTER_OPEN = new Set([1006, 1011]);
const BACKOFF_FIRST_MS = 1000;
const BACKOFF_MAX_MS = 30000;
const MAX_ATTEMPTS = 8;

export function closeText(code, reason) {
  if (reason) {
    return reason.endsWith(".") ? reason : `${reason}.`;
  }
  return CLOSE_TEXT[code] || `The console closed (code ${code}).`;
}

function setStatus(state, text) {
  status.dataset.state = state;
  status.textContent = text;
}

function showNotice(text) {
  notice.textContent = text;
  notice.hidden = !text;
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
  return `${scheme}//${base.host}${base.pathname}?token=${encodeURIComponent(token)}&notices=1`;
}

// A WebSocket as noVNC sees it, minus the proxy's text notices: noVNC
// attaches to anything with these properties (core/websock.js).
class NoticeChannel {
  constructor(socket, onNotice) {
    this._socket = socket;
    this._onNotice = onNotice;
    this._onmessage = null;
    socket.addEventListener("message", (e) => {
      if (typeof e.data === "string") {
        try {
          this._onNotice(JSON.parse(e.data));
        } catch (err) {
          console.warn("ignoring a text message that is not a notice", err);
        }
      } else if (this._onmessage) {
        this._onmessage(e);
      }
    });
  }
  send(data) { this._socket.send(data); }
  close(code, reason) { this._socket.close(code, reason); }
  get binaryType() { return this._socket.binaryType; }
  set binaryType(value) { this._socket.binaryType = value; }
  get onerror() { return this._socket.onerror; }
  set onerror(handler) { this._socket.onerror = handler; }
  get onmessage() { return this._onmessage; }
  set onmessage(handler) { this._onmessage = handler; }
  get onopen() { return this._socket.onopen; }
  set onopen(handler) { this._socket.onopen = handler; }
  get onclose() { return this._socket.onclose; }
  set onclose(handler) { this._socket.onclose = handler; }
  get protocol() { return this._socket.protocol; }
  get readyState() { return this._socket.readyState; }
}

const page = {
  rfb: null,
  socket: null,
  attempts: 0,
  everConnected: false,
  retryTimer: null,
  closes: [],
};
window.txvnc = page;

let idleDeadline = null;

function onNotice(message) {
  if (message.type === "idle-warning") {
    idleDeadline = Date.now() + message.seconds * 1000;
    showNotice(`No input for a while: this console closes in ${message.seconds} s unless you use it.`);
  } else if (message.type === "session-warning") {
    showNotice(`This console reaches its time limit in ${message.seconds} s.`);
  }
}

// Input clears the idle warning (the proxy counts the same input).
for (const type of ["keydown", "pointerdown", "pointermove", "wheel"]) {
  document.addEventListener(type, () => {
    if (idleDeadline !== null) {
      idleDeadline = null;
      showNotice("");
    }
  }, { capture: true, passive: true });
}

function connect(token) {
  let closeEvent = null;
  let opened = false;
  let desktopName = "the instance";
  const socket = new WebSocket(websocketURL(token), ["binary"]);
  socket.addEventListener("open", () => { opened = true; });
  socket.addEventListener("close", (e) => {
    closeEvent = e;
    page.closes.push({ code: e.code, reason: e.reason });
  });

  const rfb = new RFB(document.getElementById("screen"), new NoticeChannel(socket, onNotice));
  rfb.scaleViewport = true;
  rfb.resizeSession = false;
  page.rfb = rfb;
  page.socket = socket;

  rfb.addEventListener("connect", () => {
    page.attempts = 0;
    page.everConnected = true;
    cad.disabled = false;
    paste.disabled = false;
    setStatus("connected", `Connected to ${desktopName}`);
    delete document.body.dataset.closeCode;
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
    paste.disabled = true;
    // noVNC may report the disconnect before the socket's close event.
    setTimeout(() => ended(token, closeEvent, opened), 0);
  });
}

function ended(token, closeEvent, opened) {
  const code = closeEvent ? closeEvent.code : 1006;
  const reason = closeEvent && closeEvent.reason;
  const text = closeText(code, reason);
  const retry = RECONNECT_CODES.has(code)
      || (RECONNECT_AFTER_OPEN.has(code) && (opened || page.attempts > 0));
  if (retry && page.attempts < MAX_ATTEMPTS) {
    const delay = Math.min(BACKOFF_FIRST_MS * 2 ** page.attempts, BACKOFF_MAX_MS);
    page.attempts += 1;
    setStatus("reconnecting",
      `Disconnected: ${text} Reconnecting in ${Math.round(delay / 1000)} s `
      + `(attempt ${page.attempts} of ${MAX_ATTEMPTS})…`);
    document.body.dataset.closeCode = String(code);
    page.retryTimer = setTimeout(() => {
      page.retryTimer = null;
      setStatus("connecting", "Reconnecting…");
      connect(token);
    }, delay);
    return;
  }
  const gaveUp = retry ? " Reconnecting failed: reload the page to try again." : "";
  showNotice("");
  setStatus("disconnected", `Disconnected: ${text}${gaveUp}`);
  document.body.dataset.closeCode = String(code);
}

function start() {
  const token = consoleToken();
  if (!token) {
    setStatus("disconnected", "No console token in the address: open the console link you were given.");
    return;
  }
  cad.addEventListener("click", () => page.rfb && page.rfb.sendCtrlAltDel());
  paste.addEventListener("click", async () => {
    try {
      const text = await navigator.clipboard.readText();
      if (text && page.rfb) {
        page.rfb.clipboardPasteFrom(text);
        page.rfb.focus();
      }
    } catch (err) {
      showNotice("The browser did not allow reading the clipboard: press Ctrl+V in the console instead.");
    }
  });
  // Ctrl+V on the page (outside noVNC's canvas) pastes too.
  document.addEventListener("paste", (e) => {
    const text = e.clipboardData && e.clipboardData.getData("text/plain");
    if (text && page.rfb) {
      page.rfb.clipboardPasteFrom(text);
      e.preventDefault();
    }
  });
  fullscreen.addEventListener("click", async () => {
    if (document.fullscreenElement) {
      await document.exitFullscreen();
    } else {
      await document.documentElement.requestFullscreen();
    }
  });
  document.addEventListener("fullscreenchange", () => {
    fullscreen.textContent = document.fullscreenElement ? "Exit full screen" : "Full screen";
  });
  connect(token);
}

window.txvncCloseText = closeText;
start();
