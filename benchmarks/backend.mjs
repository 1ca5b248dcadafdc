// The far side of every benchmark: fake VNC servers, the token endpoint
// both proxies ask, and a WebSocket server speaking the same scripts (the
// load client's own ceiling, with no proxy in between).
//
// Every VNC-side connection starts with the 12-byte RFB greeting, then:
//   stream  writes 64 KiB chunks as fast as the socket takes them
//   sink    reads; writes one byte each time another 256 KiB has arrived
//   echo    writes back everything it reads
//   hold    nothing more (an idle console)
//   paced   64 KiB every 10 ms (6.4 MB/s a console), all consoles on one
//           timer, skipped while 256 KiB of its writes still wait:
//           a load every proxy carries with CPU to spare, so the CPU per
//           MiB of two proxies is compared doing the same work
//
// The token endpoint answers GET /v1/tokens/<token> (websockify's
// JSONTokenApi, txvnc's check) and POST /v1/tokens/<token>/use (txvnc's
// proxy, which uses single-use tokens up) with the same JSON, for tokens
// "<port>-<anything>".
//
// Prints one JSON line with the ports once everything listens.

import http from "node:http";
import net from "node:net";
import { WebSocketServer } from "ws";

const GREETING = Buffer.from("RFB 003.008\n");
const CHUNK = Buffer.alloc(64 * 1024, 0x5a);
const ACK_EVERY = 256 * 1024;

function stream(write, onDrain) {
  const pump = () => {
    while (write(CHUNK)) {
      /* keep writing until the socket buffer is full */
    }
  };
  onDrain(pump);
  pump();
}

function sinkCounter(reply) {
  let seen = 0;
  let acked = 0;
  return (data) => {
    seen += data.length;
    let acks = 0;
    while (seen - acked >= ACK_EVERY) {
      acked += ACK_EVERY;
      acks += 1;
    }
    if (acks) reply(Buffer.alloc(acks, 1));
  };
}

const PACE_MS = 10;
const pacedSockets = new Set();
setInterval(() => {
  for (const sock of pacedSockets) {
    if (sock.writableLength < 4 * CHUNK.length) sock.write(CHUNK);
  }
}, PACE_MS);

const scripts = {
  stream(sock) {
    sock.write(GREETING);
    stream((b) => !sock.destroyed && sock.write(b), (f) => sock.on("drain", f));
  },
  sink(sock) {
    sock.write(GREETING);
    sock.on("data", sinkCounter((b) => sock.write(b)));
  },
  echo(sock) {
    sock.setNoDelay(true);
    sock.write(GREETING);
    sock.on("data", (d) => sock.write(d));
  },
  hold(sock) {
    sock.write(GREETING);
  },
  paced(sock) {
    sock.write(GREETING);
    pacedSockets.add(sock);
    sock.on("close", () => pacedSockets.delete(sock));
  },
};

function listen(server) {
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server.address().port)));
}

const ports = {};
for (const [name, script] of Object.entries(scripts)) {
  const server = net.createServer({ noDelay: name === "echo" }, (sock) => {
    sock.on("error", () => {});
    script(sock);
  });
  server.maxConnections = 1 << 20;
  ports[name] = await listen(server);
}

const tokenApi = http.createServer((req, res) => {
  const m = /^\/v1\/tokens\/(\d+)-[^/]*(\/use)?$/.exec(req.url);
  if (!m || req.method !== (m[2] ? "POST" : "GET")) {
    res.writeHead(404, { "content-type": "application/json" });
    res.end('{"error": "not found"}');
    return;
  }
  const body = JSON.stringify({
    host: "127.0.0.1",
    port: Number(m[1]),
    instance_uuid: null,
    console_type: "novnc",
    expires_at: "2099-01-01T00:00:00Z",
  });
  res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
  res.end(body);
});
tokenApi.keepAliveTimeout = 120000;
ports.tokens = await listen(tokenApi);

// The same scripts over WebSocket, chosen by path: /stream, /sink, ...
const wsHttp = http.createServer();
const wss = new WebSocketServer({ server: wsHttp, perMessageDeflate: false, maxPayload: 64 << 20 });
wss.on("connection", (ws, req) => {
  ws.on("error", () => {});
  const name = req.url.split("?")[0].slice(1);
  ws.send(GREETING);
  const sock = ws._socket;
  if (name === "stream") {
    stream(
      (b) => {
        // A socket the client dropped stays OPEN for ws until its close
        // event runs, which this loop would never let happen; a write
        // after the socket ended only makes an error (and no progress).
        if (ws.readyState !== ws.OPEN || !sock.writable) return false;
        ws.send(b);
        return sock.writable && sock.writableLength < 1 << 20;
      },
      (f) => sock.on("drain", f),
    );
  } else if (name === "sink") {
    ws.on("message", sinkCounter((b) => ws.send(b)));
  } else if (name === "echo") {
    sock.setNoDelay(true);
    ws.on("message", (d) => ws.send(d));
  }
});
ports.ws = await listen(wsHttp);

process.stdout.write(JSON.stringify(ports) + "\n");
