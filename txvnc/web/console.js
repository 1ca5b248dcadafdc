// txvnc's console page: one noVNC RFB client on a WebSocket back to the
// proxy that served this page. The page opens the WebSocket itself (noVNC
// accepts a ready channel) so it can show the close code and reason the
// proxy sends, read the proxy's text notices (a warning before an idle
// timeout or the session cap, keepalives that show the path is alive), and
// reconnect after an unexpected drop.
//
// A browser reports a refused WebSocket handshake (an expired token, a
// token API that is down) as the same bare 1006 as a proxy it cannot
// reach, so after every 1006 the page asks the proxy over plain HTTP
// (POST /token-check) whether its token can still open a console, and
// stops for good only when the proxy says it cannot.
//
// Around the screen: the VNC password prompt (credentials.js), the check
// of the VNC server's RSA key (identity.js), the
// clipboard both ways (clipboard.js), scaling and keyboard access to the
// screen (screen.js), the extra-keys bar (keys.js), each shown only as far
// as the token's policy allows (policy.js).
import RFB from "./novnc/core/rfb.js";
import { Clipboard } from "./clipboard.js";
import { CredentialsPrompt, covers } from "./credentials.js";
import { IdentityPrompt, fingerprint } from "./identity.js";
import { ExtraKeys } from "./keys.js";
import { OPEN_POLICY, abilities, policyFrom } from "./policy.js";
import { Scaling, keyboardReachable } from "./screen.js";

const status = document.getElementById("status");
const notice = document.getElementById("notice");
const announcer = document.getElementById("announce");
const screen = document.getElementById("screen");
const fullscreen = document.getElementById("fullscreen");
const scalingSelect = document.getElementById("scaling");

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
  4007: "Recording failed: this console must be recorded, and it could not be.",
};

// Drops after which the page reconnects by itself: the service restarting
// or busy, or the VNC server lost after the console had been open; a 1006
// when the token check says the token is still good (or cannot say yet).
// Never after a revocation, an expiry, a limit or a refusal.
const RECONNECT_CODES = new Set([1001, 1013]);
const RECONNECT_AFTER_OPEN = new Set([1011]);
const BACKOFF_FIRST_MS = 1000;
const BACKOFF_MAX_MS = 30000;
const MAX_ATTEMPTS = 8;
// How long the token check may take before the proxy counts as unreachable.
const CHECK_TIMEOUT_MS = 10000;
// How long a WebSocket may stay connecting: a path that drops packets
// rather than refusing them would otherwise hold an attempt for minutes.
// The proxy's own handshake timeout is 30 s.
const CONNECT_TIMEOUT_MS = 35000;
const UNREACHABLE = "The console service cannot be reached.";
const CANNOT_CHECK = "The console service cannot check the token right now.";
const NEW_LINK = "Ask for a new console link.";
// The proxy's words for a token that cannot open a console (relay.py).
const INVALID_TOKEN = "The token is invalid or has expired";

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

// Tell a screen reader something that has no place on screen of its own.
function announce(text) {
  announcer.textContent = "";
  requestAnimationFrame(() => { announcer.textContent = text; });
}

const NO_PASSWORD = "Disconnected: No password was given. Reload the page to try again.";
const NOT_APPROVED = "Disconnected: The VNC server's identity was not approved. "
    + "Reload the page to try again.";

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
  constructor(socket, onNotice, onHeard) {
    this._socket = socket;
    this._onNotice = onNotice;
    this._onmessage = null;
    socket.addEventListener("message", (e) => {
      onHeard();
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

// A connection over which nothing (screen updates, the proxy's keepalive
// notices) arrived for this many of the proxy's keepalive intervals is
// taken for dead: a path that drops packets never closes by itself.
const SILENT_INTERVALS = 3;

const page = {
  rfb: null,
  socket: null,
  attempts: 0,
  everConnected: false,
  retryTimer: null,
  // The back-off delays used so far, in ms.
  delays: [],
  closes: [],
  // The answers of the token checks: an HTTP status, or 0 when the proxy
  // could not be reached.
  checks: [],
  // The proxy's keepalive interval in seconds, once it has said it (0:
  // it sends none, and a silent connection is never taken for dead).
  keepalive: 0,
  // The token's policy, once the proxy has told it (policy.js).
  policy: OPEN_POLICY,
};
window.txvnc = page;

const prompt = new CredentialsPrompt();
const identity = new IdentityPrompt();
const clipboard = new Clipboard(page, { announce, showNotice });
const keys = new ExtraKeys(page);
const scaling = new Scaling(page);
// What the user typed after a refused password, for the next connection's
// credentialsrequired only: never stored, never logged.
let pendingCredentials = null;
let desktopName = "the instance";

function connectedText() {
  return `Connected to ${desktopName}${page.policy.viewOnly ? " (view only)" : ""}`;
}

function setPolicy(policy) {
  page.policy = policy;
  const can = abilities(policy);
  document.body.dataset.viewOnly = String(policy.viewOnly);
  document.body.dataset.clipboard = policy.clipboard;
  keys.setPolicy(can);
  clipboard.setPolicy(can);
  scaling.setPolicy(can);
  if (page.rfb) {
    page.rfb.viewOnly = policy.viewOnly;
  }
  if (status.dataset.state === "connected") {
    setStatus("connected", connectedText());
  }
}

let idleDeadline = null;

function onNotice(message) {
  const policy = policyFrom(message);
  if (policy) {
    setPolicy(policy);
  } else if (message.type === "idle-warning") {
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
  // The password dance of this connection: what the server asked for,
  // whether the user answered, the server's reason when it refused.
  let asked = ["password"];
  let sentCredentials = false;
  let refused = null;
  let cancelled = false;
  let declined = false;
  const socket = new WebSocket(websocketURL(token), ["binary"]);
  // Closing a socket that is still connecting fails it: a close event
  // with 1006, as for any other connection that could not be made.
  const deadline = setTimeout(() => socket.close(), CONNECT_TIMEOUT_MS);
  socket.addEventListener("open", () => {
    opened = true;
    clearTimeout(deadline);
  });
  socket.addEventListener("close", (e) => {
    clearTimeout(deadline);
    clearInterval(watchdog);
    closeEvent = e;
    page.closes.push({ code: e.code, reason: e.reason });
  });

  // Silence for SILENT_INTERVALS keepalive intervals ends the connection as
  // a lost one (noVNC's disconnect gives up on a dead socket's closing
  // handshake after a few seconds).
  let heard = Date.now();
  let watchdog = null;
  let silent = false;
  const listen = (message) => {
    if (message.type === "keepalive" && message.seconds > 0 && watchdog === null) {
      page.keepalive = message.seconds;
      const limit = SILENT_INTERVALS * message.seconds * 1000;
      watchdog = setInterval(() => {
        if (Date.now() - heard > limit) {
          clearInterval(watchdog);
          silent = true;
          rfb.disconnect();
        }
      }, 1000);
    }
    onNotice(message);
  };
  const channel = new NoticeChannel(socket, listen, () => { heard = Date.now(); });
  const rfb = new RFB(screen, channel);
  rfb.viewOnly = page.policy.viewOnly;
  scaling.apply(rfb);
  keyboardReachable(screen, () => scalingSelect.focus());
  page.rfb = rfb;
  page.socket = socket;

  rfb.addEventListener("connect", () => {
    page.attempts = 0;
    page.everConnected = true;
    keys.setConnected(true);
    clipboard.setConnected(true);
    setStatus("connected", connectedText());
    delete document.body.dataset.closeCode;
  });
  rfb.addEventListener("desktopname", (e) => {
    desktopName = e.detail.name;
    if (status.dataset.state === "connected") {
      setStatus("connected", connectedText());
    }
    document.title = `${desktopName} - Console`;
  });
  rfb.addEventListener("credentialsrequired", (e) => {
    asked = e.detail.types;
    if (covers(pendingCredentials, asked)) {
      const values = pendingCredentials;
      pendingCredentials = null;
      sentCredentials = true;
      rfb.sendCredentials(values);
      return;
    }
    pendingCredentials = null;
    setStatus("password", asked.includes("username")
      ? "The machine's VNC server asks for a user name and password."
      : "The machine's VNC server asks for a password.");
    prompt.ask(asked, null, (values) => {
      sentCredentials = true;
      setStatus("connecting", "Checking the password…");
      rfb.sendCredentials(values);
    }, () => {
      cancelled = true;
      rfb.disconnect();
    });
  });
  rfb.addEventListener("serververification", async (e) => {
    let key = null;
    try {
      key = e.detail.type === "RSA" ? await fingerprint(e.detail.publickey) : null;
    } catch (err) {
      console.warn("cannot take the VNC server key's fingerprint", err);
    }
    if (key === null) {
      declined = true;  // nothing the user could check
      rfb.disconnect();
      return;
    }
    setStatus("identity", "The machine's VNC server asks you to check its identity.");
    identity.ask(key, (approved) => {
      if (approved) {
        setStatus("connecting", "Connecting…");
        rfb.approveServer();
      } else {
        declined = true;
        rfb.disconnect();
      }
    });
  });
  rfb.addEventListener("securityfailure", (e) => {
    const why = e.detail.reason || `status ${e.detail.status}`;
    if (sentCredentials) {
      refused = why;  // the disconnect that follows asks again
      return;
    }
    setStatus("disconnected", `VNC security failed: ${why}`);
  });
  rfb.addEventListener("clipboard", (e) => clipboard.fromMachine(e.detail.text));
  rfb.addEventListener("disconnect", () => {
    keys.setConnected(false);
    clipboard.setConnected(false);
    clearInterval(watchdog);
    pendingCredentials = null;
    if (prompt.open) {
      prompt.dismiss();  // the connection ended while the page was asking
    }
    identity.dismiss();
    if (refused !== null) {
      askAgain(token, asked, refused);
    } else if (cancelled) {
      setStatus("disconnected", NO_PASSWORD);
    } else if (declined) {
      setStatus("disconnected", NOT_APPROVED);
    } else {
      // noVNC may report the disconnect before the socket's close event.
      setTimeout(() => ended(token, silent ? null : closeEvent, opened), 0);
    }
  });
}

// The VNC server refused the password (and closed the connection, as RFB
// servers do): ask again, and connect anew with the answer. Not a
// reconnect with back-off: nothing is tried until the user answers.
function askAgain(token, types, why) {
  setStatus("password", "The password was not accepted: enter it again.");
  prompt.ask(types, `The VNC server did not accept the password (${why}).`, (values) => {
    pendingCredentials = values;
    setStatus("connecting", "Checking the password…");
    connect(token);
  }, () => setStatus("disconnected", NO_PASSWORD));
}

// Asks the proxy whether the token can still open a console, without
// opening one (a single-use token is not used up). The answer's status, 0
// when the proxy cannot be reached, and the proxy's sentence if any.
async function checkToken(token) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), CHECK_TIMEOUT_MS);
  try {
    // In the body, not the URL: no access log on the way sees the token.
    const response = await fetch(new URL("token-check", window.location.href), {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token }),
      cache: "no-store",
      credentials: "same-origin",
      signal: controller.signal,
    });
    let error = "";
    try {
      const body = await response.json();
      error = typeof body.error === "string" ? body.error : "";
    } catch (err) {
      // Not our proxy's JSON (a load balancer's error page): status only.
    }
    return { status: response.status, error };
  } catch (err) {
    return { status: 0, error: "" };
  } finally {
    clearTimeout(timer);
  }
}

async function ended(token, closeEvent, opened) {
  const code = closeEvent ? closeEvent.code : 1006;
  const reason = closeEvent && closeEvent.reason;
  document.body.dataset.closeCode = String(code);
  showNotice("");
  if (RECONNECT_CODES.has(code)
      || (RECONNECT_AFTER_OPEN.has(code) && (opened || page.attempts > 0))) {
    retryLater(token, code, closeText(code, reason));
    return;
  }
  if (code !== 1006) {
    giveUp(code, closeText(code, reason));
    return;
  }
  // A bare 1006: a refused handshake or a lost connection. Ask why.
  setStatus(status.dataset.state === "connected" ? "reconnecting" : status.dataset.state,
    opened ? "Connection lost: checking the console's link…" : "Checking the console's link…");
  const verdict = await checkToken(token);
  page.checks.push(verdict.status);
  if (verdict.status === 200) {
    retryLater(token, code, opened || page.everConnected
      ? "The connection to the console was lost."
      : "The console could not be opened.");
  } else if (verdict.status === 0) {
    retryLater(token, code, UNREACHABLE);
  } else if (verdict.status >= 500) {
    // txvnc's own 503 says why; a load balancer's 502 or 503 (no txvnc
    // behind it) is a proxy that cannot be reached.
    retryLater(token, code, verdict.error ? CANNOT_CHECK : UNREACHABLE);
  } else if (verdict.status === 429) {
    retryLater(token, code, closeText(code, verdict.error));
  } else if (verdict.status === 403 && verdict.error === INVALID_TOKEN) {
    giveUp(code, `${closeText(code, verdict.error)} ${NEW_LINK}`);
  } else if (verdict.error) {
    // Another refusal the handshake would get too (origin, target policy).
    giveUp(code, closeText(code, verdict.error));
  } else if (opened || page.attempts > 0) {
    // No answer from txvnc itself (something in front of it answered):
    // what the page did before it could ask.
    retryLater(token, code, closeText(code, ""));
  } else {
    giveUp(code, closeText(code, ""));
  }
}

// The wait before reconnect attempt C{attempt} (from 0), in ms: doubling
// steps, jittered to half to all of the step. After a restart every open
// page is told 1001 at the same moment; without jitter they would all come
// back in the same millisecond, step after step, and queue up on the token
// checks together.
function backoffDelay(attempt) {
  const step = Math.min(BACKOFF_FIRST_MS * 2 ** attempt, BACKOFF_MAX_MS);
  return Math.round(step * (0.5 + Math.random() / 2));
}
page.backoffDelay = backoffDelay;

function retryLater(token, code, text) {
  if (page.attempts >= MAX_ATTEMPTS) {
    giveUp(code, `${text} Reconnecting failed: reload the page to try again.`);
    return;
  }
  const delay = backoffDelay(page.attempts);
  page.delays.push(delay);
  page.attempts += 1;
  setStatus("reconnecting",
    `Disconnected: ${text} Reconnecting in ${Math.round(delay / 1000)} s `
    + `(attempt ${page.attempts} of ${MAX_ATTEMPTS})…`);
  page.retryTimer = setTimeout(() => {
    page.retryTimer = null;
    setStatus("connecting", "Reconnecting…");
    connect(token);
  }, delay);
}

function giveUp(code, text) {
  setStatus("disconnected", `Disconnected: ${text}`);
  document.body.dataset.closeCode = String(code);
}

function start() {
  const token = consoleToken();
  if (!token) {
    setStatus("disconnected", "No console token in the address: open the console link you were given.");
    return;
  }
  setPolicy(OPEN_POLICY);
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
