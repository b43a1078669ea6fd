'use strict';
// The calibration server: the cheapest thing that speaks Kaiwa's frames.
//
// No Redis, no auth, no database: rooms live in a Map with an in-process seq
// counter, and a message frame is framed once and the same bytes are written to
// every member's socket. What the load generator measures against it is the
// ceiling of the load generator itself (the server needs far less CPU per
// delivery than the generator does to receive, parse and account for it).
//
//     node bench/loadgen-node/echo.js --port 8765

const http = require('http');
const WebSocket = require('ws');

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
};
const port = Number(opt('--port', '8765'));
const host = opt('--host', '127.0.0.1');
const maxSize = Number(opt('--max-size', String(16 * 1024 * 1024)));

const USER = { id: 0, username: 'echo' };
const rooms = new Map(); // room -> Set<WebSocket>
const seqs = new Map();

function frameOnce(text) {
  return WebSocket.Sender.frame(Buffer.from(text), {
    fin: true, rsv1: false, opcode: 1, mask: false, readOnly: false,
  });
}

function broadcast(members, text) {
  const frame = frameOnce(text);
  for (const ws of members) {
    if (ws.readyState !== WebSocket.OPEN) continue;
    const socket = ws._socket;
    socket.cork();
    for (const part of frame) socket.write(part);
    socket.uncork();
  }
}

const server = http.createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'text/plain' });
  res.end('echo\n');
});
const wss = new WebSocket.Server({ server, path: '/ws', perMessageDeflate: false, maxPayload: maxSize, skipUTF8Validation: true });

wss.on('connection', (ws) => {
  const joined = new Set();
  ws.on('message', (data) => {
    let frame;
    try {
      frame = JSON.parse(data.toString());
    } catch (e) {
      ws.send(JSON.stringify({ type: 'error', code: 'bad_request', message: 'bad frame', ref: null }));
      return;
    }
    const room = String(frame.room);
    if (frame.type === 'join') {
      if (!rooms.has(room)) rooms.set(room, new Set());
      rooms.get(room).add(ws);
      joined.add(room);
      ws.send(JSON.stringify({ type: 'joined', room, last_seq: seqs.get(room) || 0, presence: [], reset: false }));
    } else if (frame.type === 'send') {
      if (!joined.has(room)) {
        ws.send(JSON.stringify({ type: 'error', code: 'not_joined', message: 'join first', ref: frame.client_id || null }));
        return;
      }
      const seq = (seqs.get(room) || 0) + 1;
      seqs.set(room, seq);
      const ts = new Date().toISOString();
      const cid = frame.client_id === undefined ? null : frame.client_id;
      broadcast(rooms.get(room), JSON.stringify({ type: 'message', room, seq, ts, user: USER, body: frame.body || '', client_id: cid }));
      ws.send(JSON.stringify({ type: 'ack', room, client_id: cid, seq, ts }));
    } else if (frame.type === 'leave') {
      if (rooms.has(room)) rooms.get(room).delete(ws);
      joined.delete(room);
      ws.send(JSON.stringify({ type: 'left', room }));
    } else if (frame.type === 'ping') {
      ws.send('{"type":"pong"}');
    }
  });
  ws.on('close', () => {
    for (const room of joined) if (rooms.has(room)) rooms.get(room).delete(ws);
  });
  ws.on('error', () => {});
});

server.listen(port, host, 4096);
process.on('SIGTERM', () => process.exit(0));
