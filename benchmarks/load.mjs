// The benchmark's browser: Node's ws (with bufferutil masking) or, for the
// no-proxy baseline, plain TCP. One measurement per run, one JSON line out.
//
//   node load.mjs MODE TARGET [SECONDS|COUNT] [CONCURRENCY]
//
// TARGET is tcp://HOST:PORT or a ws:// URL; "{n}" in it becomes a number
// unique to each connection (the token's tail). Modes:
//   download  one console, bytes/s received over SECONDS
//   upload    one console, 16 KiB masked messages, bytes/s acknowledged
//             by the VNC side over SECONDS (4 MiB window)
//   rtt       one console, 64-byte round trips; p50/p99 in microseconds
//   connect   consoles set up per second over SECONDS with CONCURRENCY
//             in flight, each ending at the first byte from the VNC side
//   paced-connect  consoles started at a fixed RATE a second (CONCURRENCY)
//             for SECONDS, each closed at the first byte from the VNC side:
//             a rate every proxy carries with CPU to spare, so two proxies'
//             CPU per console is compared doing the same work
//   hold      opens COUNT consoles, prints, holds them until stdin closes
//   many      COUNT consoles streaming at once over SECONDS; aggregate
//             bytes/s and min/max between consoles
//   burst     COUNT consoles opened at the same moment (a page reload for
//             every console after a restart); a clean refusal (HTTP 503,
//             close 1013) is retried after the console page's jittered
//             back-off; seconds until all are open, retries, and any that
//             neither opened nor were refused within 30 s (hung)
//
// With BENCH_TOKEN_CYCLE=N, "{n}" is the connection's serial modulo N
// instead (tokens from a fixed list, for websockify's TokenFile plugin).

import net from "node:net";
import readline from "node:readline";
import WebSocket from "ws";

const [mode, target, arg = "3", concArg = "32"] = process.argv.slice(2);
const now = () => Number(process.hrtime.bigint()) / 1e9;
const sleep = (s) => new Promise((r) => setTimeout(r, s * 1000));
let serial = 0;

/** One console: {ready: Promise, send(buf), close(), ondata}. */
function open(tgt) {
  const cycle = Number(process.env.BENCH_TOKEN_CYCLE || 0);
  const n = cycle ? `${serial++ % cycle}` : `${process.pid}x${serial++}`;
  const url = tgt.replaceAll("{n}", n);
  // frames: WebSocket messages (or TCP reads) received, for bytes per frame.
  const c = { ondata: null, bytes: 0, frames: 0 };
  c.ready = new Promise((resolve, reject) => {
    let first = true;
    const got = (data) => {
      c.bytes += data.length;
      c.frames += 1;
      if (first) {
        first = false;
        resolve(c);
      }
      if (c.ondata) c.ondata(data);
    };
    if (url.startsWith("tcp://")) {
      const u = new URL(url);
      const sock = net.connect({ host: u.hostname, port: Number(u.port), noDelay: true });
      sock.on("data", got);
      sock.on("error", reject);
      sock.on("close", () => reject(new Error("closed")));
      c.send = (b) => sock.write(b);
      c.buffered = () => sock.writableLength;
      c.close = () => sock.destroy();
      c.socket = sock;
    } else {
      const ws = new WebSocket(url, ["binary"], { perMessageDeflate: false, maxPayload: 64 << 20 });
      ws.binaryType = "nodebuffer";
      ws.on("message", got);
      ws.on("error", reject);
      ws.on("close", (code) => reject(new Error(`closed ${code}`)));
      ws.on("unexpected-response", (req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
      ws.on("upgrade", (res) => res.socket.setNoDelay(true));
      c.send = (b) => ws.send(b, { binary: true });
      c.buffered = () => ws.bufferedAmount;
      c.close = () => ws.terminate();
      c.ws = ws;
    }
  });
  return c;
}

// The measurement window, told to run.py as it opens and closes so it can
// read the proxy's and the backend's CPU time at the same moments; the
// client's own CPU time in the window goes in the result.
// With BENCH_ACK=1 (run.py), the window opens only once the harness has
// answered the start mark on stdin: it reads every process's CPU time at
// the mark, and that read must not land inside the measured window (it
// showed as the slowest 1 % of a short round-trip run).
let stdinLines = null;
const acks = [];
function harnessAck() {
  if (process.env.BENCH_ACK !== "1") return Promise.resolve();
  if (!stdinLines) {
    stdinLines = readline.createInterface({ input: process.stdin });
    stdinLines.on("line", () => acks.shift()?.());
  }
  return new Promise((r) => acks.push(r));
}

async function windowOpen() {
  const acked = harnessAck();
  process.stdout.write(JSON.stringify({ mark: "start" }) + "\n");
  await acked;
  return { t: now(), cpu: process.cpuUsage() };
}

function windowClose(w) {
  const cpu = process.cpuUsage(w.cpu);
  process.stdout.write(JSON.stringify({ mark: "end" }) + "\n");
  stdinLines?.close();
  stdinLines = null;
  return { seconds: now() - w.t, client_cpu_s: (cpu.user + cpu.system) / 1e6 };
}

function percentile(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function download(seconds) {
  const c = await open(target).ready;
  await sleep(0.5);
  const w = await windowOpen(), b0 = c.bytes;
  await sleep(seconds);
  const b1 = c.bytes, win = windowClose(w);
  c.close();
  return { bytes_per_s: (b1 - b0) / win.seconds, ...win };
}

async function upload(seconds) {
  const c = open(target);
  await c.ready;
  const msg = Buffer.alloc(16 * 1024, 0xa5);
  const WINDOW = 4 << 20, ACK = 256 * 1024;
  let sent = 0, acked = 0, wake = null;
  c.ondata = (d) => {
    acked += d.length * ACK;
    if (wake) wake();
  };
  let running = true;
  const pump = async () => {
    while (running) {
      while (sent - acked < WINDOW && c.buffered() < 1 << 20) {
        c.send(msg);
        sent += msg.length;
      }
      await new Promise((r) => {
        wake = r;
        setImmediate(r);
      });
    }
  };
  // Greeting bytes were counted as data before ondata was set; acks only now.
  pump();
  await sleep(0.5);
  const w = await windowOpen(), a0 = acked;
  await sleep(seconds);
  const a1 = acked, win = windowClose(w);
  running = false;
  c.close();
  return { bytes_per_s: (a1 - a0) / win.seconds, ...win };
}

// Round trips before the measured ones. The first few thousand of a run are
// slower through every system alike (the Node client and backend still
// being compiled, by V8's background threads, on the same two cores), and
// they are not what a proxy that runs for months adds.
const RTT_WARM_UP = 2000;

// BENCH_NET_DELAY_MS: the browser that far away, each way (a wait before
// each message leaves and after its echo arrives), for figures that should
// hold for real consoles (--poll-spin, docs/performance.md). 0: loopback.
const NET_DELAY = Number(process.env.BENCH_NET_DELAY_MS || 0) / 1000;

async function rtt(count) {
  const c = open(target);
  await c.ready;
  const msg = Buffer.alloc(64, 0x42);
  const samples = [];
  let pending = 0, resolveOne = null;
  c.ondata = (d) => {
    pending -= d.length;
    if (pending <= 0 && resolveOne) resolveOne();
  };
  let w = null, win = {};
  for (let i = 0; i < count + RTT_WARM_UP; i++) {
    if (i === RTT_WARM_UP) w = await windowOpen();
    pending = 64;
    const t0 = process.hrtime.bigint();
    const done = new Promise((r) => (resolveOne = r));
    if (NET_DELAY) await sleep(NET_DELAY);
    c.send(msg);
    await done;
    if (NET_DELAY) await sleep(NET_DELAY);
    if (i >= RTT_WARM_UP) samples.push(Number(process.hrtime.bigint() - t0) / 1000);
  }
  if (w) win = windowClose(w);
  c.close();
  samples.sort((a, b) => a - b);
  return {
    p50_us: percentile(samples, 50),
    p99_us: percentile(samples, 99),
    p90_us: percentile(samples, 90),
    p999_us: percentile(samples, 99.9),
    samples: samples.length,
    ...win,
  };
}

// Consoles opened one at a time, each timed until it is ready: what the
// connect figures share, whatever sets their pace.
function openings() {
  const latencies = [];
  let failed = 0, firstError = null;
  return {
    async one() {
      const s = now();
      const c = open(target);
      try {
        await c.ready;
        latencies.push((now() - s) * 1e6);
      } catch (e) {
        failed += 1;
        firstError ??= String(e.message || e);
      }
      c.close?.();
    },
    result(elapsed, win) {
      latencies.sort((a, b) => a - b);
      return {
        ...win,
        per_s: latencies.length / elapsed,
        p50_us: percentile(latencies, 50),
        p99_us: percentile(latencies, 99),
        opened: latencies.length,
        failed,
        first_error: firstError,
      };
    },
  };
}

async function connect(seconds, concurrency) {
  const tally = openings();
  const w = await windowOpen();
  const end = now() + seconds;
  const t0 = now();
  const worker = async () => {
    while (now() < end) await tally.one();
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const elapsed = now() - t0;
  return tally.result(elapsed, windowClose(w));
}

async function pacedConnect(seconds, rate) {
  const tally = openings();
  const pending = [];
  let started = 0;
  const w = await windowOpen();
  const t0 = now();
  // Every 10 ms, as many new consoles as the rate owes by then.
  while (now() - t0 < seconds) {
    const owed = Math.floor((now() - t0) * rate) - started;
    for (let i = 0; i < owed; i++, started++) pending.push(tally.one());
    await sleep(0.01);
  }
  await Promise.all(pending);
  const elapsed = now() - t0;
  return tally.result(elapsed, windowClose(w));
}

async function openMany(count, concurrency) {
  const consoles = [];
  let failed = 0, firstError = null, next = 0;
  const worker = async () => {
    while (next < count) {
      next += 1;
      const c = open(target);
      try {
        await c.ready;
        c.ready.catch(() => {});
        consoles.push(c);
      } catch (e) {
        failed += 1;
        firstError ??= String(e.message || e);
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return { consoles, failed, firstError };
}

async function hold(count, concurrency) {
  const t0 = now();
  const { consoles, failed, firstError } = await openMany(count, concurrency);
  let lost = 0;
  for (const c of consoles) (c.ws || c.socket).on("close", () => (lost += 1));
  process.stdout.write(
    JSON.stringify({ opened: consoles.length, failed, first_error: firstError, seconds: now() - t0 }) + "\n",
  );
  await new Promise((r) => {
    process.stdin.on("end", r);
    process.stdin.resume();
  });
  for (const c of consoles) c.close();
  return { lost_while_held: lost };
}

async function many(count, seconds) {
  const { consoles, failed, firstError } = await openMany(count, 16);
  await sleep(0.5);
  const w = await windowOpen(), b0 = consoles.map((c) => c.bytes);
  const f0 = consoles.reduce((a, c) => a + c.frames, 0);
  await sleep(seconds);
  const b1 = consoles.map((c) => c.bytes), win = windowClose(w);
  const frames = consoles.reduce((a, c) => a + c.frames, 0) - f0;
  for (const c of consoles) c.close();
  const per = b1.map((b, i) => (b - b0[i]) / win.seconds);
  const total = per.reduce((a, b) => a + b, 0);
  return {
    ...win,
    bytes_per_s: total,
    frames,
    fairness: per.length ? Math.min(...per) / Math.max(...per) : 0,
    consoles: consoles.length,
    failed,
    first_error: firstError,
  };
}

// The console page's back-off (txvnc/web/console.js backoffDelay): doubling
// steps from 1 s, each jittered to half to all of the step.
const backoffDelay = (attempt) => Math.min(1000 * 2 ** attempt, 30000) * (0.5 + Math.random() / 2);

async function burst(count) {
  const HANG = 30;
  let retries = 0, refusedFor = {}, failed = 0, hung = 0, firstError = null;
  const latencies = [];
  const t0 = now();
  const one = async () => {
    for (let attempt = 0; ; attempt++) {
      const c = open(target);
      const outcome = await Promise.race([
        c.ready.then(() => "open", (e) => String(e.message || e)),
        sleep(HANG).then(() => "hung"),
      ]);
      if (outcome === "open") {
        latencies.push((now() - t0) * 1e6);
        return c;
      }
      c.close?.();
      if (outcome === "hung") {
        hung += 1;
        return null;
      }
      if ((outcome === "HTTP 503" || outcome === "closed 1013") && attempt < 8) {
        retries += 1;
        refusedFor[outcome] = (refusedFor[outcome] || 0) + 1;
        await sleep(backoffDelay(attempt) / 1000);
        continue;
      }
      failed += 1;
      firstError ??= outcome;
      return null;
    }
  };
  const consoles = await Promise.all(Array.from({ length: count }, one));
  const seconds = now() - t0;
  for (const c of consoles) c?.close();
  latencies.sort((a, b) => a - b);
  return {
    opened: latencies.length,
    seconds,
    p50_us: percentile(latencies, 50),
    p99_us: percentile(latencies, 99),
    retries,
    refused: refusedFor,
    failed,
    hung,
    first_error: firstError,
  };
}

const modes = {
  burst: () => burst(Number(arg)),
  download: () => download(Number(arg)),
  upload: () => upload(Number(arg)),
  rtt: () => rtt(Number(arg)),
  connect: () => connect(Number(arg), Number(concArg)),
  "paced-connect": () => pacedConnect(Number(arg), Number(concArg)),
  hold: () => hold(Number(arg), Number(concArg)),
  many: () => many(Number(arg), Number(concArg)),
};
const result = await modes[mode]();
process.stdout.write(JSON.stringify(result) + "\n");
process.exit(0);
