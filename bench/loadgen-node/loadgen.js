'use strict';
// Kaiwa's load generator, driven by `python -m bench` (bench/nodefleet.py).
//
// One JSON command per line on stdin, one JSON answer per line on stdout (same
// "id"). It keeps the same books as bench/loadgen.py: every connection (a
// member) presents a real session cookie and a trusted Origin and joins its
// rooms; senders are open-loop (message n is due at t0 + n / rate whatever the
// server answers, and its scheduled time travels in the body, so falling behind
// shows as latency); every receiver checks per room that seq grows by one;
// every message ends delivered, refused (error frame, or the sender's socket
// closed) or lost (accepted or unanswered, and never delivered).
//
// Written in Node.js with `ws` because the Python generator topped out near
// 50,000 deliveries/s on one core: below what the servers reach.

const WebSocket = require('ws');
const readline = require('readline');
const { performance } = require('perf_hooks');

const now = () => performance.now(); // ms, monotonic

const state = {
  url: null,
  origin: null,
  members: [],
  msgs: new Map(), // client_id -> Msg
  steps: [],
  step: null,
  counter: 0,
  progress: 0,
  failures: {},
};

function bump(obj, key, n = 1) {
  obj[key] = (obj[key] || 0) + n;
}

function newStep(label) {
  const step = {
    id: state.steps.length, label, latencies: {}, deliveries: 0, lateOrStray: 0, outOfOrder: 0,
    duplicates: 0, errors: {}, closes: {}, resets: 0, msgIds: [],
  };
  state.steps.push(step);
  state.step = step;
  return step;
}

// -- incoming frames ----------------------------------------------------------------

// Message frames are the hot path (hundreds of thousands a second): their few
// fields are read straight from the text; every other frame is JSON.parse'd.
function field(text, name, from) {
  let i = text.indexOf(`"${name}":`, from);
  if (i < 0) return -1;
  i += name.length + 3;
  if (text.charCodeAt(i) === 32) i += 1;
  return i;
}

function readInt(text, i) {
  let n = 0;
  if (i < 0) return 0;
  for (;;) {
    const c = text.charCodeAt(i);
    if (!(c >= 48 && c <= 57)) return n;
    n = n * 10 + (c - 48);
    i += 1;
  }
}

function readString(text, i) {
  // i at the opening quote; the bench's room slugs and client ids need no unescaping
  if (text.charCodeAt(i) !== 34) return null;
  const end = text.indexOf('"', i + 1);
  return text.slice(i + 1, end);
}

function onText(member, data) {
  const t = now();
  // latin1 is a plain byte copy: message frames are matched and read as ASCII;
  // any other frame is decoded as UTF-8 and parsed.
  let text = data.latin1Slice(0, data.length);
  const isMessage = text.startsWith('{"type":"message"') || text.startsWith('{"type": "message"');
  if (!isMessage) text = data.toString('utf8');
  if (isMessage) {
    const room = readString(text, field(text, 'room', 0));
    const seq = readInt(text, field(text, 'seq', 0));
    const cidAt = field(text, 'client_id', 0);
    const cid = cidAt >= 0 ? readString(text, cidAt) : null;
    const bodyAt = field(text, 'body', 0);
    let sched = NaN;
    if (bodyAt >= 0) {
      const bar = text.indexOf('|', bodyAt);
      if (bar > 0 && bar - bodyAt < 24) sched = parseFloat(text.slice(bodyAt + 1, bar));
    }
    onMessage(member, room, seq, cid, sched, t);
    return;
  }
  let frame;
  try {
    frame = JSON.parse(text);
  } catch (e) {
    bump(state.failures, 'unparseable frame');
    return;
  }
  const kind = frame.type;
  if (kind === 'ack') {
    const msg = member.inflight.get(frame.client_id);
    if (!msg) return;
    member.inflight.delete(frame.client_id);
    msg.status = 'acked';
    msg.seq = frame.seq | 0;
    state.progress += 1;
  } else if (kind === 'joined') {
    const waiter = member.joinWaiters.get(frame.room);
    if (waiter) {
      member.joinWaiters.delete(frame.room);
      waiter(frame);
    }
  } else if (kind === 'error') {
    const code = String(frame.code);
    if (state.step) bump(state.step.errors, code);
    if (frame.ref === 'join' && member.joinWaiters.has(frame.room) && member.joinRefused) {
      member.joinRefused(frame);
      return;
    }
    const msg = member.inflight.get(String(frame.ref));
    if (msg) {
      member.inflight.delete(String(frame.ref));
      msg.status = 'refused';
      msg.refused = code;
      state.progress += 1;
    }
  } else if (kind === 'message') {
    const body = typeof frame.body === 'string' ? frame.body : '';
    const bar = body.indexOf('|');
    onMessage(member, frame.room, frame.seq, frame.client_id, bar > 0 ? parseFloat(body.slice(0, bar)) : NaN, t);
  }
}

function onMessage(member, room, seq, cid, sched, t) {
  member.received += 1;
  const step = state.step;
  if (room !== null && seq > 0) {
    const last = member.lastSeq[room] || 0;
    if (seq === last + 1) {
      member.lastSeq[room] = seq;
    } else if (seq > last + 1) {
      let gaps = member.missing[room];
      if (!gaps) gaps = member.missing[room] = new Set();
      for (let s = last + 1; s < seq; s++) gaps.add(s);
      member.lastSeq[room] = seq;
    } else {
      const gaps = member.missing[room];
      if (gaps && gaps.has(seq)) {
        gaps.delete(seq);
        if (step) step.outOfOrder += 1;
      } else {
        if (step) step.duplicates += 1;
        return;
      }
    }
  }
  const msg = cid ? state.msgs.get(cid) : undefined;
  if (!msg) {
    if (step) step.lateOrStray += 1;
    return;
  }
  msg.delivered[member.group] = (msg.delivered[member.group] || 0) + 1;
  state.progress += 1;
  const target = state.steps[msg.step];
  if (target) {
    target.deliveries += 1;
    let lat = target.latencies[member.group];
    if (!lat) lat = target.latencies[member.group] = [];
    lat.push(t - (Number.isNaN(sched) ? msg.sched : sched));
  }
}

// -- connections ----------------------------------------------------------------------

function addMember(spec) {
  const member = {
    idx: state.members.length, cookie: spec.cookie || null, rooms: spec.rooms, group: spec.group || 'normal',
    resume: !!spec.resume, ws: null, lastSeq: {}, missing: {}, joinWaiters: new Map(), closeCodes: [],
    reconnects: 0, attempts: 0, stopped: false, inflight: new Map(), received: 0, joinedAt: null,
  };
  state.members.push(member);
  return member;
}

function openMember(member, { since = false, timeout = 30 } = {}) {
  return new Promise((resolve, reject) => {
    const t0 = now();
    const headers = {};
    if (member.cookie) headers.Cookie = member.cookie;
    const ws = new WebSocket(state.url, {
      headers, origin: state.origin || undefined, perMessageDeflate: false, skipUTF8Validation: true,
      maxPayload: 64 * 1024 * 1024, handshakeTimeout: timeout * 1000,
    });
    member.ws = ws;
    let settled = false;
    const fail = (err) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      member.joinWaiters.clear();
      try { ws.terminate(); } catch (e) { /* already gone */ }
      reject(err);
    };
    const timer = setTimeout(() => fail(new Error('timeout before joined')), timeout * 1000);
    let pending = member.rooms.length;
    const joinFrames = {};
    // As the chat page does: a join refused as unavailable goes again after retry_after_ms; other refusals end the open.
    member.joinRefused = (frame) => {
      const code = String(frame.code);
      if (code !== 'unavailable') {
        fail(new Error(`join refused: ${code}`));
        return;
      }
      bump(state.failures, 'join refused, sent again: unavailable');
      setTimeout(() => {
        if (!settled && member.ws === ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(joinFrames[frame.room]));
      }, Math.max(250, frame.retry_after_ms | 0));
    };
    ws.on('open', () => {
      for (const room of member.rooms) {
        member.joinWaiters.set(room, (frame) => {
          if (!(room in member.lastSeq)) member.lastSeq[room] = frame.last_seq | 0;
          if (frame.reset && state.step) state.step.resets += 1;
          pending -= 1;
          if (pending === 0 && !settled) {
            settled = true;
            clearTimeout(timer);
            member.attempts = 0;
            member.joinedAt = now();
            resolve((now() - t0) / 1000);
          }
        });
        const frame = { type: 'join', room };
        if (since && room in member.lastSeq) frame.since = member.lastSeq[room];
        joinFrames[room] = frame;
        ws.send(JSON.stringify(frame));
      }
    });
    ws.on('message', (data) => onText(member, data));
    ws.on('error', (err) => fail(err));
    ws.on('unexpected-response', (req, res) => fail(new Error(`HTTP ${res.statusCode} instead of 101`)));
    ws.on('close', (code, reason) => {
      // The server's reason says which refusal it was (1013: a database outage or a slow reader).
      const why = reason && reason.length ? ` (${reason.toString('utf8').slice(0, 60)})` : '';
      fail(new Error(`closed with ${code}${why} before joined`));
      onClose(member, ws, code);
    });
  });
}

function onClose(member, ws, code) {
  if (member.ws !== ws) return;
  const real = code === 1005 || code === 1006 ? null : code;
  member.closeCodes.push(real);
  if (state.step && !member.stopped) bump(state.step.closes, real === null ? 'no close frame' : String(real));
  for (const msg of member.inflight.values()) {
    msg.status = 'refused';
    msg.refused = real !== null ? `close ${real}` : 'connection lost';
  }
  member.inflight.clear();
  if (member.resume && !member.stopped && real !== 4401) scheduleReopen(member, real);
}

// Resuming clients reconnect as Kaiwa's browser client does (chat/static/chat/js/socket.js):
// at once after the server's 1012 (restart) or 1013 (try again), then full-jitter backoff,
// a random delay in [d/2, d] with d doubling from 1 s up to 30 s. A client waits up to a
// minute for its answer, as a browser has no handshake timeout of its own.
const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 30000;

function scheduleReopen(member, code) {
  member.attempts += 1;
  member.reconnects += 1;
  const immediate = member.attempts === 1 && (code === 1012 || code === 1013);
  const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** Math.min(member.attempts, 16));
  const delay = immediate ? 0 : ceiling * (0.5 + 0.5 * Math.random());
  setTimeout(async () => {
    if (member.stopped) return;
    try {
      await openMember(member, { since: true, timeout: 60 });
    } catch (err) {
      bump(state.failures, 'reconnect ' + String(err.message || err).slice(0, 60));
      // the 'close' handler of the failed socket schedules the next attempt
    }
  }, delay);
}

async function openMany(members, concurrency, timeout) {
  const durations = [];
  let next = 0;
  const worker = async () => {
    while (next < members.length) {
      const m = members[next++];
      try {
        durations.push(await openMember(m, { timeout }));
      } catch (err) {
        const key = String(err.message || err).replace(/\d{5,}/g, 'N').slice(0, 100);
        bump(state.failures, key);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, members.length) }, worker));
  return durations;
}

// -- sending ---------------------------------------------------------------------------

function sendOne(member, room, padding, sched) {
  state.counter += 1;
  const cid = 'b' + state.counter;
  const step = state.step;
  const msg = { cid, room, step: step ? step.id : -1, sched, status: 'pending', refused: '', seq: 0, delivered: {} };
  state.msgs.set(cid, msg);
  if (step) step.msgIds.push(cid);
  const ws = member.ws;
  if (!ws || ws.readyState !== WebSocket.OPEN || member.joinWaiters.size) {
    msg.status = 'refused';
    msg.refused = 'not connected';
    return;
  }
  member.inflight.set(cid, msg);
  ws.send(`{"type":"send","room":${JSON.stringify(room)},"body":"${sched.toFixed(3)}|${padding}","client_id":"${cid}"}`);
}

function sendOpenLoop(senders, rate, duration, padding) {
  return new Promise((resolve) => {
    const total = Math.max(1, Math.floor(rate * duration));
    const interval = 1000 / rate;
    const t0 = now() + 20;
    let n = 0;
    let worst = 0;
    state.stopSend = false;
    const tick = () => {
      const t = now();
      if (state.stopSend) {
        resolve({ sent: n, worst_send_lag_ms: Math.round(worst * 10) / 10 });
        return;
      }
      while (n < total && t0 + n * interval <= t) {
        const due = t0 + n * interval;
        worst = Math.max(worst, t - due);
        const [idx, room] = senders[n % senders.length];
        sendOne(state.members[idx], room, padding, due);
        n += 1;
      }
      if (n >= total) {
        resolve({ sent: n, worst_send_lag_ms: Math.round(worst * 10) / 10 });
        return;
      }
      setTimeout(tick, Math.max(0, t0 + n * interval - now()));
    };
    setTimeout(tick, 20);
  });
}

// -- accounting ------------------------------------------------------------------------------

function receivers(room, group) {
  let n = 0;
  for (const m of state.members) if (m.rooms.includes(room) && (group === undefined || m.group === group)) n += 1;
  return n;
}

function allDelivered(step) {
  const need = {};
  for (const cid of step.msgIds) {
    const msg = state.msgs.get(cid);
    if (msg.status === 'pending') return false;
    if (msg.status === 'acked') {
      if (need[msg.room] === undefined) need[msg.room] = receivers(msg.room);
      let got = 0;
      for (const g in msg.delivered) got += msg.delivered[g];
      if (got < need[msg.room]) return false;
    }
  }
  return true;
}

function drain(quiet, maximum) {
  const step = state.step;
  return new Promise((resolve) => {
    const t0 = now();
    let last = state.progress;
    let lastChange = t0;
    const timer = setInterval(() => {
      const t = now();
      let done = step ? allDelivered(step) : true;
      if (state.progress !== last) {
        last = state.progress;
        lastChange = t;
      } else if (t - lastChange >= quiet * 1000) done = true;
      if (t - t0 >= maximum * 1000) done = true;
      if (done) {
        clearInterval(timer);
        resolve(Math.round((t - t0) / 10) / 100);
      }
    }, 50);
  });
}

function pct(sorted, p) {
  if (!sorted.length) return null;
  const k = Math.min(sorted.length - 1, Math.max(0, Math.round((p / 100) * (sorted.length - 1))));
  return Math.round(sorted[k] * 100) / 100;
}

function latencySummary(values) {
  const sorted = Float64Array.from(values).sort();
  return {
    n: sorted.length, p50: pct(sorted, 50), p90: pct(sorted, 90), p99: pct(sorted, 99),
    max: sorted.length ? Math.round(sorted[sorted.length - 1] * 100) / 100 : null,
  };
}

// Where each missing delivery of an acked message stands, receiver by receiver:
// "skipped" when the receiver got later seqs of that room but never this one (a
// gap that was never repaired: lost), "not_reached" when the receiver's newest
// seq is still below it (the server was still behind when the books closed:
// late, or lost at the tail), "receiver_closed" when that receiver's socket is
// no longer open (the contract lets a closed connection miss what it resumes).
// Unacked messages that are not refused have no seq: counted as "unanswered".
function lostDetail(step, groups) {
  const detail = {};
  for (const g of groups) detail[g] = { skipped: 0, not_reached: 0, receiver_closed: 0, unanswered: 0 };
  const byRoom = {};
  for (const cid of step.msgIds) {
    const msg = state.msgs.get(cid);
    if (msg.status === 'refused') continue;
    let members = byRoom[msg.room];
    if (!members) members = byRoom[msg.room] = state.members.filter((m) => m.rooms.includes(msg.room));
    let got = 0;
    for (const g in msg.delivered) got += msg.delivered[g];
    if (got >= members.length) continue;
    for (const m of members) {
      const d = detail[m.group];
      if (!d) continue;
      if (msg.status !== 'acked') {
        d.unanswered += 1;
        continue;
      }
      const gaps = m.missing[msg.room];
      const skipped = !!gaps && gaps.has(msg.seq);
      if (!skipped && (m.lastSeq[msg.room] || 0) >= msg.seq) continue; // this one was delivered
      if (!(m.ws && m.ws.readyState === WebSocket.OPEN)) d.receiver_closed += 1;
      else if (skipped) d.skipped += 1;
      else d.not_reached += 1;
    }
  }
  return detail;
}

function outcome(stepId, groups) {
  const step = state.steps[stepId];
  groups = groups || [...new Set(state.members.map((m) => m.group))].sort();
  const res = {
    messages: step.msgIds.length, acked: 0, refused: {}, unanswered: 0, deliveries: {},
    delivered_despite_refusal: 0,
  };
  for (const g of groups) res.deliveries[g] = { delivered: 0, lost: 0, refused: 0, expected: 0 };
  const expected = {};
  for (const cid of step.msgIds) {
    const msg = state.msgs.get(cid);
    if (msg.status === 'acked') res.acked += 1;
    else if (msg.status === 'refused') bump(res.refused, msg.refused);
    else res.unanswered += 1;
    let exp = expected[msg.room];
    if (!exp) {
      exp = expected[msg.room] = {};
      for (const g of groups) exp[g] = receivers(msg.room, g);
    }
    for (const g of groups) {
      const d = res.deliveries[g];
      const got = Math.min(msg.delivered[g] || 0, exp[g]);
      d.expected += exp[g];
      d.delivered += got;
      if (msg.status === 'refused') {
        d.refused += exp[g] - got;
        res.delivered_despite_refusal += got;
      } else {
        d.lost += exp[g] - got;
      }
    }
  }
  res.lost_detail = lostDetail(step, groups);
  res.latency_ms = {};
  for (const g of groups) res.latency_ms[g] = latencySummary(step.latencies[g] || []);
  res.out_of_order = step.outOfOrder;
  res.duplicates = step.duplicates;
  res.errors = step.errors;
  res.closes = step.closes;
  res.resets = step.resets;
  res.recovered_over_http = 0;
  let gaps = 0;
  for (const m of state.members) for (const r in m.missing) gaps += m.missing[r].size;
  res.gaps_open = gaps;
  return res;
}

function closeAll(grace) {
  return new Promise((resolve) => {
    let open = 0;
    for (const m of state.members) {
      m.stopped = true;
      if (m.ws && m.ws.readyState !== WebSocket.CLOSED) {
        open += 1;
        m.ws.once('close', () => { open -= 1; if (open === 0) finish(); });
        try { m.ws.close(1000); } catch (e) { m.ws.terminate(); }
      }
    }
    const timer = setTimeout(() => {
      for (const m of state.members) if (m.ws) m.ws.terminate();
      finish();
    }, grace * 1000);
    let done = false;
    function finish() {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve();
    }
    if (open === 0) finish();
  });
}

// -- commands ----------------------------------------------------------------------------------

const commands = {
  async ping() {
    return {};
  },
  async stop_send() {
    state.stopSend = true;
    return {};
  },
  async config(c) {
    state.url = c.url;
    state.origin = c.origin || null;
    return {};
  },
  async add(c) {
    const first = state.members.length;
    for (const spec of c.members) addMember(spec);
    return { first, count: c.members.length };
  },
  async open(c) {
    const members = c.indices.map((i) => state.members[i]);
    const durations = await openMany(members, c.concurrency || 200, c.timeout || 30);
    return { durations };
  },
  async step(c) {
    return { step: newStep(c.label).id };
  },
  async send(c) {
    return sendOpenLoop(c.senders, c.rate, c.duration, 'x'.repeat(Math.max(1, c.padding)));
  },
  async drain(c) {
    return { seconds: await drain(c.quiet, c.maximum) };
  },
  async outcome(c) {
    return outcome(c.step, c.groups);
  },
  async members(c) {
    const out = [];
    for (const i of c.indices) {
      const m = state.members[i];
      out.push({
        open: !!m.ws && m.ws.readyState === WebSocket.OPEN && m.joinWaiters.size === 0,
        close_codes: m.closeCodes, reconnects: m.reconnects, joined_at: m.joinedAt, received: m.received,
      });
    }
    return { members: out, now: now() };
  },
  async forget(c) {
    // Members that never joined: stop them and expect nothing of them.
    for (const i of c.indices) {
      const m = state.members[i];
      m.stopped = true;
      m.rooms = [];
      if (m.ws) m.ws.terminate();
    }
    return {};
  },
  async close_some(c) {
    // Close these members for good (no reconnect), wait, then make them ready to open again.
    const members = c.indices.map((i) => state.members[i]);
    await Promise.all(members.map((m) => new Promise((resolve) => {
      m.stopped = true;
      if (!m.ws || m.ws.readyState === WebSocket.CLOSED) return resolve();
      const timer = setTimeout(() => { m.ws.terminate(); resolve(); }, (c.grace || 10) * 1000);
      m.ws.once('close', () => { clearTimeout(timer); resolve(); });
      m.ws.close(1000);
    })));
    for (const m of members) {
      m.stopped = false;
      m.ws = null;
      m.joinWaiters.clear();
    }
    return {};
  },
  async close_all(c) {
    await closeAll(c.grace || 10);
    return {};
  },
  async reset(c) {
    await closeAll(c.grace || 10);
    state.members = [];
    state.msgs = new Map();
    state.steps = [];
    state.step = null;
    state.failures = {};
    return {};
  },
};

function reply(obj) {
  const cpu = process.cpuUsage();
  obj.cpu_us = cpu.user + cpu.system;
  obj.failures = state.failures;
  process.stdout.write(JSON.stringify(obj) + '\n');
}

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', async (line) => {
  let c;
  try {
    c = JSON.parse(line);
  } catch (e) {
    reply({ id: null, ok: false, error: 'bad command line' });
    return;
  }
  if (c.cmd === 'exit') process.exit(0);
  const fn = commands[c.cmd];
  if (!fn) {
    reply({ id: c.id, ok: false, error: `unknown command ${c.cmd}` });
    return;
  }
  try {
    const out = await fn(c);
    reply({ id: c.id, ok: true, ...out });
  } catch (err) {
    reply({ id: c.id, ok: false, error: String((err && err.stack) || err) });
  }
});
rl.on('close', () => process.exit(0));
