// vledger's pages: fetch from the gateway, verify in the browser (WebCrypto SHA-256 and Ed25519).
// Nothing here trusts the gateway's word for a hash or a signature: each is recomputed or checked.
"use strict";

const hexOf = (bytes) => Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, "0")).join("");
const bytesOfHex = (hex) => {
  if (typeof hex !== "string" || hex.length % 2 || /[^0-9a-f]/.test(hex)) throw new Error("not lower-case hex");
  return Uint8Array.from(hex.match(/../g) || [], (h) => parseInt(h, 16));
};
const bytesOfBase64 = (text) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
const concat = (...parts) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
};
const equal = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
const sha256 = async (bytes) => new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));

// RFC 9162 2.1: leaf hashes and interior nodes (PROTOCOL 12.1, 12.2).
const leafHash = (record) => sha256(concat(Uint8Array.of(0), record));
const nodeHash = (left, right) => sha256(concat(Uint8Array.of(1), left, right));

// PROTOCOL 12.4 (RFC 9162 2.1.3.2), step by step; throws with the step that failed.
async function verifyInclusion(leaf, index, size, proof, root) {
  if (proof.length > 64) throw new Error("a proof of more than 64 hashes");
  if (index >= size) throw new Error(`leaf ${index} is not in a tree of size ${size}`);
  let fn = BigInt(index), sn = BigInt(size) - 1n, r = leaf;
  for (const p of proof) {
    if (sn === 0n) throw new Error("the proof is too long");
    if ((fn & 1n) === 1n || fn === sn) {
      r = await nodeHash(p, r);
      if ((fn & 1n) === 0n) while ((fn & 1n) === 0n && fn !== 0n) { fn >>= 1n; sn >>= 1n; }
    } else {
      r = await nodeHash(r, p);
    }
    fn >>= 1n; sn >>= 1n;
  }
  if (sn !== 0n) throw new Error("the proof is too short");
  if (!equal(r, root)) throw new Error("the proof does not lead to the root");
}

async function verifyEd25519(publicKey, signature, message) {
  const key = await crypto.subtle.importKey("raw", publicKey, { name: "Ed25519" }, false, ["verify"]);
  return crypto.subtle.verify({ name: "Ed25519" }, key, signature, message);
}

// --- signed notes, checkpoints and receipts (PROTOCOL 13 and 14) ---------------------------------
const utf8 = new TextEncoder();
const textOf = (bytes) => new TextDecoder("utf-8", { fatal: true }).decode(bytes);

// 13.1: "<name>+<8 hex key id>+base64(alg || 32-byte public key)"; the key id is recomputed.
async function parseVkey(vkey) {
  const first = vkey.indexOf("+"), second = vkey.indexOf("+", first + 1);
  if (first < 1 || second < 0) throw new Error(`not a vkey: ${vkey}`);
  const name = vkey.slice(0, first), id = vkey.slice(first + 1, second);
  const raw = bytesOfBase64(vkey.slice(second + 1));
  if (raw.length !== 33 || !/^[0-9a-f]{8}$/.test(id)) throw new Error(`not a vkey: ${vkey}`);
  const digest = await sha256(concat(utf8.encode(name + "\n"), raw));
  if (hexOf(digest.slice(0, 4)) !== id) throw new Error(`the key id of ${name} is not its own`);
  return { name, alg: raw[0], keyId: digest.slice(0, 4), publicKey: raw.slice(1), vkey };
}

// 13.2: the text (up to the blank line, its newline kept) and the signature lines.
function parseNote(note) {
  const split = note.lastIndexOf("\n\n");
  if (split < 0 || !note.endsWith("\n")) throw new Error("not a signed note");
  const text = note.slice(0, split + 1);
  const lines = note.slice(split + 2, -1).split("\n").map((line) => {
    const m = /^\u2014 (\S+) (\S+)$/.exec(line);
    if (!m) throw new Error("a malformed signature line");
    const raw = bytesOfBase64(m[2]);
    return { name: m[1], keyId: raw.slice(0, 4), signature: raw.slice(4) };
  });
  return { text, lines };
}

// 13.3: origin, size, root.
function parseCheckpoint(text) {
  const [origin, size, root] = text.split("\n");
  if (!/^(0|[1-9][0-9]*)$/.test(size || "")) throw new Error("the checkpoint's size is not decimal");
  const rootBytes = bytesOfBase64(root || "");
  if (rootBytes.length !== 32) throw new Error("the checkpoint's root is not 32 bytes");
  return { origin, size: BigInt(size), root: rootBytes };
}

// 13.5: the log key's Ed25519 signature over the text, and each witness's cosignature/v1 over
// "cosignature/v1\ntime <T>\n" || text. Returns {checkpoint, logOk, cosigned: [{name, time, ok}]}.
async function verifyCheckpointNote(note, logKey, witnessKeys) {
  const { text, lines } = parseNote(note);
  const body = utf8.encode(text);
  const checkpoint = parseCheckpoint(text);
  if (checkpoint.origin !== logKey.name) throw new Error(`origin ${checkpoint.origin} is not ${logKey.name}`);
  let logOk = false;
  const cosigned = [];
  for (const line of lines) {
    if (line.name === logKey.name && equal(line.keyId, logKey.keyId)) {
      logOk = logOk || (line.signature.length === 64 && await verifyEd25519(logKey.publicKey, line.signature, body));
      continue;
    }
    const key = witnessKeys.find((k) => k.name === line.name && equal(k.keyId, line.keyId));
    if (!key || line.signature.length !== 72) continue;
    const time = new DataView(line.signature.buffer, line.signature.byteOffset).getBigUint64(0);
    const message = concat(utf8.encode(`cosignature/v1\ntime ${time}\n`), body);
    cosigned.push({ name: key.name, time, ok: await verifyEd25519(key.publicKey, line.signature.slice(8), message) });
  }
  return { checkpoint, logOk, cosigned };
}

// 14.2: a receipt file's values (the canonical encoding is checked by the CLI and the outsider);
// "rotations" (13.8) only when the checkpoint's key is not the genesis key.
function parseReceipt(text) {
  const r = JSON.parse(text);
  const keys = ["v", "ledger", "index", "hash", "record", "proof", "checkpoint"];
  const got = JSON.stringify(Object.keys(r));
  if ((got !== JSON.stringify(keys) && got !== JSON.stringify([...keys, "rotations"])) || r.v !== 1) {
    throw new Error("not a receipt (14.2)");
  }
  const rotations = (r.rotations || []).map((x) => ({ index: x.index, record: bytesOfBase64(x.record), proof: x.proof.map(bytesOfBase64) }));
  return { ...r, record: bytesOfBase64(r.record), proof: r.proof.map(bytesOfBase64), rotations };
}

// Section 1, read only as far as a record's fields need: nil, bool, int, str, bin, array, map.
function decodeMsgpack(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 0;
  const take = (n) => { if (at + n > bytes.length) throw new Error("truncated msgpack"); const b = bytes.slice(at, at + n); at += n; return b; };
  const uint = (n) => { const v = n === 1 ? view.getUint8(at) : n === 2 ? view.getUint16(at) : n === 4 ? view.getUint32(at) : view.getBigUint64(at); at += n; return v; };
  const value = () => {
    const b = uint(1);
    if (b <= 0x7f) return b;
    if (b >= 0xe0) return b - 0x100;
    if ((b & 0xf0) === 0x80) return map(b & 0x0f);
    if ((b & 0xf0) === 0x90) return array(b & 0x0f);
    if ((b & 0xe0) === 0xa0) return textOf(take(b & 0x1f));
    switch (b) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xc4: return take(uint(1));
      case 0xc5: return take(uint(2));
      case 0xc6: return take(uint(4));
      case 0xcc: return uint(1);
      case 0xcd: return uint(2);
      case 0xce: return uint(4);
      case 0xcf: return uint(8);
      case 0xd0: { const v = view.getInt8(at); at += 1; return v; }
      case 0xd1: { const v = view.getInt16(at); at += 2; return v; }
      case 0xd2: { const v = view.getInt32(at); at += 4; return v; }
      case 0xd3: { const v = view.getBigInt64(at); at += 8; return v; }
      case 0xd9: return textOf(take(uint(1)));
      case 0xda: return textOf(take(uint(2)));
      case 0xdb: return textOf(take(uint(4)));
      case 0xdc: return array(uint(2));
      case 0xdd: return array(uint(4));
      case 0xde: return map(uint(2));
      case 0xdf: return map(uint(4));
      default: throw new Error(`msgpack type ${b} is not one a record holds`);
    }
  };
  const array = (n) => Array.from({ length: n }, value);
  const map = (n) => { const m = {}; for (let i = 0; i < n; i++) { const k = value(); m[k] = value(); } return m; };
  const result = value();
  if (at !== bytes.length) throw new Error("bytes after the msgpack value");
  return result;
}

// 13.8: from the genesis key, each rotation record must be signed by the key in force before it
// over "vledger/checkpoint-key-rotation/v1\n<origin>\n<old vkey>\n<new vkey>\n" and name a key
// never used before; returns the key in force after them. Their places are proven by the caller.
async function followKeyChain(firstKey, rotations, ledger) {
  let key = firstKey;
  const used = [hexOf(firstKey.publicKey)];
  let last = -1;
  for (const rotation of rotations) {
    if (rotation.index <= last) throw new Error("rotations out of order");
    last = rotation.index;
    const record = decodeMsgpack(rotation.record);
    const content = decodeMsgpack(record.content);
    if (Number(record.height) !== rotation.index || content.ledger !== ledger || content.kind !== "checkpoint_key") {
      throw new Error(`the record at ${rotation.index} is not a key rotation of ${ledger}`);
    }
    const payload = content.payload || {};
    if (JSON.stringify(Object.keys(payload).sort()) !== JSON.stringify(["key", "signature"])) throw new Error("a malformed rotation");
    const next = await parseVkey(payload.key);
    const signature = bytesOfBase64(payload.signature);
    if (next.alg !== 1 || next.name !== key.name || used.includes(hexOf(next.publicKey)) || signature.length !== 64) {
      throw new Error(`the rotation at ${rotation.index} names no new key of ${key.name}`);
    }
    const message = utf8.encode(`vledger/checkpoint-key-rotation/v1\n${key.name}\n${key.vkey}\n${next.vkey}\n`);
    if (!await verifyEd25519(key.publicKey, signature, message)) {
      throw new Error(`the rotation at ${rotation.index} is not signed by the key in force`);
    }
    used.push(hexOf(next.publicKey));
    key = next;
  }
  return key;
}

// An amount of minor units (an integer Number, or a BigInt as decodeMsgpack gives one past 2**32)
// as the decimal string of currency units the gateway writes (/api/ledgers/L/funds): 2025 gives
// "20.25". From its digits, never divided as a float: a double is exact only to 2**53, and an
// amount may be up to 2**64 - 1. Throws RangeError for a Number that is not an integer.
function amountText(minor) {
  const value = BigInt(minor);
  const digits = (value < 0n ? -value : value).toString().padStart(3, "0");
  return `${value < 0n ? "-" : ""}${digits.slice(0, -2)}.${digits.slice(-2)}`;
}

async function getJSON(path) {
  const answer = await fetch(path, { headers: { Accept: "application/json" } });
  const body = await answer.json();
  if (!answer.ok) {
    const error = new Error(body.error ? `${body.error.message} [${body.error.code}]` : `HTTP ${answer.status}`);
    error.code = body.error && body.error.code;
    throw error;
  }
  return body;
}

function onEvents(handlers) {
  const source = new EventSource("/api/events");
  for (const [kind, handle] of Object.entries(handlers)) {
    source.addEventListener(kind, (event) => handle(JSON.parse(event.data)));
  }
  return source;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

async function ledgersOf(type) {
  const answer = await getJSON("/api/ledgers");
  return answer.ledgers.filter((l) => type === undefined || l.type === type).map((l) => l.ledger);
}

async function fillLedgers(select, type) {
  const names = await ledgersOf(type);
  select.replaceChildren(...names.map((n) => el("option", { value: n }, n)));
  const wanted = new URLSearchParams(location.search).get("ledger");
  if (wanted && names.includes(wanted)) select.value = wanted;
  return names;
}

window.vledger = {
  hexOf, bytesOfHex, bytesOfBase64, sha256, leafHash, nodeHash, verifyInclusion, verifyEd25519,
  parseVkey, parseNote, parseCheckpoint, verifyCheckpointNote, parseReceipt, decodeMsgpack, followKeyChain,
  getJSON, onEvents, el, fillLedgers, amountText,
};
