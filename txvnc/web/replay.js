// txvnc's replay page: plays a console recording (docs/recording.md) with
// the same noVNC that showed it live, with no VNC server: noVNC reads the
// recorded stream from a channel that stands in for its WebSocket, and
// what noVNC sends back goes nowhere.
//
// The page's URL carries a replay token (POST /v1/recordings/{id}/replay);
// the proxy answers GET /replay-data?token=... with the recording, its
// handshake already made one noVNC completes without answers.
//
// An RFB stream cannot be entered in the middle (its zlib streams carry
// state from the start), so seeking back starts a new noVNC and feeds it
// everything up to the new position at once; seeking forward feeds the
// records in between at once.

import RFB from "./novnc/core/rfb.js";

const MAGIC = "TXVNCREC1\n";
export const KIND = { HEADER: 0, SERVER: 1, INPUT: 2, CLIPBOARD: 3, GAP: 4, END: 5 };

// The recording's inner stream: MAGIC, then records of kind (u8),
// milliseconds (u32), length (u32) and data; a record cut short is left out.
export function parseRecording(buffer) {
  const bytes = new Uint8Array(buffer);
  const magic = new TextDecoder().decode(bytes.subarray(0, MAGIC.length));
  if (magic !== MAGIC) {
    throw new Error("this is not a txvnc recording");
  }
  const view = new DataView(buffer);
  const records = [];
  let at = MAGIC.length;
  while (at + 9 <= bytes.length) {
    const kind = view.getUint8(at);
    const ms = view.getUint32(at + 1);
    const length = view.getUint32(at + 5);
    if (at + 9 + length > bytes.length) break;
    records.push({ kind, ms, data: bytes.subarray(at + 9, at + 9 + length) });
    at += 9 + length;
  }
  if (!records.length || records[0].kind !== KIND.HEADER) {
    throw new Error("the recording has no header");
  }
  const header = JSON.parse(new TextDecoder().decode(records[0].data));
  return { header, records: records.slice(1) };
}

// What noVNC takes for its WebSocket: always open, deaf to what it sends.
class ReplayChannel {
  constructor() {
    this.binaryType = "arraybuffer";
    this.protocol = "";
    this.readyState = "open";
    this.onerror = null;
    this.onmessage = null;
    this.onopen = null;
    this.onclose = null;
  }

  send() {}

  close() {
    if (this.readyState === "closed") return;
    this.readyState = "closed";
    // As a WebSocket would, later: noVNC then finishes its disconnect.
    setTimeout(() => this.onclose && this.onclose({ code: 1000, reason: "", wasClean: true }));
  }

  deliver(data) {
    if (this.readyState === "open" && this.onmessage) {
      this.onmessage({ data: data.slice().buffer });
    }
  }
}

const KEY_NAMES = { 0xff0d: "⏎", 0xff08: "⌫", 0xff09: "⇥", 0xff1b: "⎋", 0x20: "␣" };

// A key press of an INPUT record as text, or null (a release, a pointer).
export function keyText(data) {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  let keysym;
  if (data[0] === 4 && data.length === 8 && data[1]) {
    keysym = view.getUint32(4);
  } else if (data[0] === 255 && data.length === 12 && view.getUint16(2)) {
    keysym = view.getUint32(4);
  } else {
    return null;
  }
  if (KEY_NAMES[keysym]) return KEY_NAMES[keysym];
  if (keysym > 0x20 && keysym < 0x7f) return String.fromCharCode(keysym);
  if (keysym >= 0x1000100 && keysym <= 0x110ffff) {
    return String.fromCodePoint(keysym - 0x1000000);
  }
  if (keysym >= 0xa0 && keysym <= 0xff) return String.fromCharCode(keysym);
  return `‹${keysym.toString(16)}›`;
}

export class Player extends EventTarget {
  constructor(screen, recording) {
    super();
    this.screen = screen;
    this.header = recording.header;
    this.records = recording.records;
    this.server = this.records.filter((r) => r.kind === KIND.SERVER);
    this.duration = this.records.length ? this.records[this.records.length - 1].ms : 0;
    this.speed = 1;
    this.playing = false;
    this.position = 0;
    this._next = 0;
    this._timer = null;
    this._start();
  }

  _start() {
    if (this.rfb) {
      // noVNC takes its screen off the page as it disconnects.
      this.rfb.disconnect();
    }
    this.channel = new ReplayChannel();
    this.rfb = new RFB(this.screen, this.channel);
    this.rfb.viewOnly = true;
    this.rfb.scaleViewport = true;
    this._next = 0;
    this.position = 0;
  }

  // Give noVNC every server record up to ms.
  _feed(ms) {
    const server = this.server;
    while (this._next < server.length && server[this._next].ms <= ms) {
      this.channel.deliver(server[this._next].data);
      this._next += 1;
    }
    this.position = Math.min(ms, this.duration);
    this.dispatchEvent(new Event("position"));
  }

  get ended() {
    return this._next >= this.server.length && this.position >= this.duration;
  }

  play() {
    if (this.ended) this.seek(0);
    this.playing = true;
    this._base = performance.now() - this.position / this.speed;
    this._tick();
    this.dispatchEvent(new Event("state"));
  }

  pause() {
    this.playing = false;
    clearTimeout(this._timer);
    this.dispatchEvent(new Event("state"));
  }

  setSpeed(speed) {
    this.speed = speed;
    if (this.playing) this._base = performance.now() - this.position / speed;
  }

  seek(ms) {
    const target = Math.max(0, Math.min(ms, this.duration));
    if (target < this.position) this._start();
    this._feed(target);
    if (this.playing) this._base = performance.now() - target / this.speed;
  }

  _tick() {
    clearTimeout(this._timer);
    if (!this.playing) return;
    this._feed((performance.now() - this._base) * this.speed);
    if (this.ended) {
      this.playing = false;
      this.dispatchEvent(new Event("state"));
      return;
    }
    const next = this._next < this.server.length ? this.server[this._next].ms : this.duration;
    const wait = Math.max(0, (next - this.position) / this.speed);
    this._timer = setTimeout(() => this._tick(), Math.min(wait, 250));
  }

  // The key presses recorded up to the current position (record_input).
  keysSoFar() {
    const keys = [];
    for (const r of this.records) {
      if (r.ms > this.position) break;
      if (r.kind === KIND.INPUT) {
        const text = keyText(r.data);
        if (text) keys.push(text);
      }
    }
    return keys.join("");
  }

  // Why the recording stopped short, if it did (a GAP record).
  gap() {
    const record = this.records.find((r) => r.kind === KIND.GAP);
    return record ? JSON.parse(new TextDecoder().decode(record.data)).why : null;
  }
}

function clockText(seconds) {
  const s = Math.floor(seconds);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

async function main() {
  const status = document.getElementById("status");
  const setStatus = (state, text) => {
    status.dataset.state = state;
    status.textContent = text;
  };
  const token = new URLSearchParams(location.search).get("token") || "";
  let response;
  try {
    response = await fetch(`replay-data?token=${encodeURIComponent(token)}`, {
      cache: "no-store",
      referrerPolicy: "no-referrer",
    });
  } catch {
    setStatus("error", "The recording service cannot be reached.");
    return;
  }
  if (!response.ok) {
    let why = `The recording cannot be played (${response.status}).`;
    try {
      why = (await response.json()).error + ".";
    } catch {
      // not JSON: keep the status line
    }
    setStatus("error", why);
    document.body.dataset.replayStatus = String(response.status);
    return;
  }
  const recording = parseRecording(await response.arrayBuffer());
  const player = new Player(document.getElementById("screen"), recording);
  window.txvncReplay = player;
  const { header } = recording;
  document.getElementById("what").textContent =
    `${header.instance_uuid || header.target}, ${new Date(header.started_at * 1000).toISOString()}`;
  document.title = `Recording of ${header.instance_uuid || header.target}`;

  const play = document.getElementById("play");
  const speed = document.getElementById("speed");
  const seek = document.getElementById("seek");
  const elapsed = document.getElementById("elapsed");
  const clock = document.getElementById("clock");
  const keysLine = document.getElementById("keys-line");
  seek.max = String(player.duration);
  for (const control of [play, speed, seek]) control.disabled = false;

  const showPosition = () => {
    seek.value = String(player.position);
    elapsed.textContent = `${clockText(player.position / 1000)} / ${clockText(player.duration / 1000)}`;
    const moment = new Date(header.started_at * 1000 + player.position);
    clock.dateTime = moment.toISOString();
    clock.textContent = moment.toISOString().replace("T", " ").slice(0, 19) + " UTC";
    if (header.input) {
      keysLine.hidden = false;
      keysLine.textContent = `Keys: ${player.keysSoFar().slice(-120)}`;
    }
  };
  const showState = () => {
    play.textContent = player.playing ? "Pause" : "Play";
    if (player.playing) setStatus("playing", "Playing");
    else if (player.ended) {
      const gap = player.gap();
      setStatus("ended", gap ? `End of the recording (it stopped short: ${gap})` : "End of the recording");
    } else setStatus("paused", "Paused");
  };
  player.addEventListener("position", showPosition);
  player.addEventListener("state", showState);
  play.addEventListener("click", () => (player.playing ? player.pause() : player.play()));
  speed.addEventListener("change", () => player.setSpeed(Number(speed.value)));
  seek.addEventListener("input", () => {
    player.seek(Number(seek.value));
    showState();
  });
  showPosition();
  setStatus("paused", "Ready");
  document.body.dataset.replayStatus = "ready";
}

main();
