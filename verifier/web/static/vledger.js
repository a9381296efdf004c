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
// "cosignature/v1\ntime <T>\n" || text. Returns {checkpoint, logOk, cosigned: [{name, key, time, ok,
// times}]}: one entry per witness key, its first line's (`time`, `ok`); a witness that cosigned a
// quiet ledger again (10.7) has more lines, and `times` are those of its lines that verified
// (11.4's since_ms and fresh_ms, once linesInForce judged each); a later line that does not verify
// is not counted (13.2 skips it), never a reason to refuse the note.
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
    const ok = await verifyEd25519(key.publicKey, line.signature.slice(8), message);
    const first = cosigned.find((c) => c.key === key);
    if (!first) cosigned.push({ name: key.name, key, time, ok, times: ok ? [time] : [] });
    else if (ok) first.times.push(time);
  }
  return { checkpoint, logOk, cosigned };
}

// 14.2: a receipt file's values (the canonical encoding is checked by the CLI and the outsider);
// "rotations" (13.8) only when the checkpoint's key is not the genesis key, "node_keys" (16.6)
// only when a witness's key rotated, each after the keys before it.
const PROVEN_KEYS = JSON.stringify(["index", "record", "proof"]);
function parseProven(list, what) {
  if (!Array.isArray(list) || list.length < 1 || list.length > 32) throw new Error(`not a receipt (14.2): ${what}`);
  return list.map((x) => {
    if (!x || JSON.stringify(Object.keys(x)) !== PROVEN_KEYS || !Number.isInteger(x.index) || x.index < 0 ||
        typeof x.record !== "string" || !Array.isArray(x.proof) || x.proof.length > 64) {
      throw new Error(`not a receipt (14.2): ${what}`);
    }
    return { index: x.index, record: bytesOfBase64(x.record), proof: x.proof.map(bytesOfBase64) };
  });
}

function parseReceipt(text) {
  const r = JSON.parse(text);
  const keys = ["v", "ledger", "index", "hash", "record", "proof", "checkpoint"];
  const got = Object.keys(r);
  const extra = got.slice(keys.length);
  const known = [[], ["rotations"], ["node_keys"], ["rotations", "node_keys"]].some((e) => JSON.stringify(e) === JSON.stringify(extra));
  if (JSON.stringify(got.slice(0, keys.length)) !== JSON.stringify(keys) || !known || r.v !== 1) {
    throw new Error("not a receipt (14.2)");
  }
  const rotations = r.rotations === undefined ? [] : parseProven(r.rotations, "its rotations");
  let nodeKeys = null;
  if (r.node_keys !== undefined) {
    const n = r.node_keys;
    if (!n || JSON.stringify(Object.keys(n)) !== JSON.stringify(["checkpoint", "rotations"]) || typeof n.checkpoint !== "string") {
      throw new Error("not a receipt (14.2): its node keys");
    }
    nodeKeys = { checkpoint: n.checkpoint, rotations: parseProven(n.rotations, "its node keys' rotations") };
  }
  return { ...r, record: bytesOfBase64(r.record), proof: r.proof.map(bytesOfBase64), rotations, nodeKeys };
}

// A record's own checks (2.1 checksum, 2.3 link) from its bytes; returns {stored, content}.
async function ownChecks(bytes) {
  const stored = decodeMsgpack(bytes);
  const checksum = await sha256(stored.content);
  const link = await sha256(concat(stored.prev, checksum, u64be(stored.height), u64be(stored.nonce),
    u64be(stored.accepted), utf8.encode(stored.origin)));
  if (!equal(checksum, stored.checksum) || !equal(link, stored.link)) throw new Error("its checksum or link is not its own");
  return { stored, content: decodeMsgpack(stored.content) };
}

// 14.2 node keys, 16.6: the later generations of the cluster's witnesses that the receipt's
// `key_rotation` records of the admin ledger state, each record checked here (its own checks,
// kind, payload, and its inclusion proof in the admin checkpoint the node keys carry). That
// checkpoint's signature is not checked here: only the admin ledger's key (its home's
// <home>.sign.pub, 14.3 step 6) can, which anchors may carry (provenRotations); without it a
// rotation here is stated, never proven. Returns {size (the admin checkpoint's), later: [{node,
// generation, index, key, accepted, until, tallied, cosigned}]}, `key` the generation's
// cosignature key as a witness (<cluster>/witness/<node>, 13.1), `accepted` and `until` (BigInt
// ms) when it came into force and when the generation before it left, `tallied` and `cosigned`
// (Maps of ledger to a BigInt height or size, null when the record states none) what the
// replaced key had tallied and cosigned (16.1).
async function statedWitnessKeys(nodeKeys, cluster) {
  const checkpoint = parseCheckpoint(parseNote(nodeKeys.checkpoint).text);
  if (checkpoint.origin !== `${cluster}/admin`) throw new Error(`the node keys' checkpoint is not ${cluster}/admin's`);
  const later = [], generations = new Map();
  let last = -1;
  for (const r of nodeKeys.rotations) {
    if (r.index <= last) throw new Error("the node keys' rotations are out of order");
    last = r.index;
    const { stored, content } = await ownChecks(r.record);
    const p = content.payload || {};
    if (content.ledger !== "admin" || Number(stored.height) !== r.index || content.kind !== "key_rotation" ||
        typeof p.node !== "string" || typeof p.sign !== "string" || !/^([0-9a-f]{64})?$/.test(p.sign) ||
        !isInteger(p.until) || BigInt(p.until) <= BigInt(stored.accepted) || !statedHeights(p.tallied) ||
        !statedHeights(p.cosigned)) {
      throw new Error(`the admin record at ${r.index} is not a key rotation`);
    }
    await verifyInclusion(await leafHash(r.record), r.index, checkpoint.size, r.proof, checkpoint.root);
    const generation = (generations.get(p.node) || 0) + 1;
    generations.set(p.node, generation);
    if (!p.sign) continue;  // a verifier's: no Ed25519 key
    const name = `${cluster}/witness/${p.node}`, raw = concat(Uint8Array.of(4), bytesOfHex(p.sign));
    const keyId = (await sha256(concat(utf8.encode(name + "\n"), raw))).slice(0, 4);
    const stated = (v) => v === undefined ? null : new Map(Object.entries(v).map(([l, n]) => [l, BigInt(n)]));
    later.push({ node: p.node, generation, index: r.index, key: { name, alg: 4, keyId, publicKey: raw.slice(1) },
                 accepted: BigInt(stored.accepted), until: BigInt(p.until), tallied: stated(p.tallied),
                 cosigned: stated(p.cosigned) });
  }
  return { size: checkpoint.size, later };
}

// Of statedWitnessKeys' later keys, those of the witnesses `witnesses` (the keys a page holds)
// name, as `vledger receipt verify` follows only rotations of its witnesses (node_keys.py's
// witness_histories): an ingest node's rotation states its own signing key too, and a line named
// <cluster>/witness/<that node> by it must never count as a witness's cosignature.
function heldWitnessRotations(later, witnesses) {
  const names = new Set(witnesses.map((k) => k.name));
  return later.filter((l) => names.has(l.key.name));
}

const isInteger = (v) => typeof v === "bigint" || Number.isInteger(v);
// A key_rotation's `tallied` or `cosigned` (16.1): absent, or a map of ledger name to an integer
// >= 0 (a `cosigned` of 0, which 16.1 refuses, could only shrink what counts).
const statedHeights = (v) => v === undefined || (v !== null && typeof v === "object" && !Array.isArray(v) &&
  !(v instanceof Uint8Array) && Object.entries(v).every(([l, h]) => NAME.test(l) && isInteger(h) && h >= 0));

// The node keys of a checked checkpoint answer (`seen`, checkedCheckpoint) as statedWitnessKeys
// reads them, and whether they are proven (16.6, 14.3 step 6): their admin checkpoint signed by
// the admin ledger's key the anchors carry (<cluster>/admin, quorum 0). Returns {proven, problem
// (why not, "" when proven), later}; no later keys for an answer without node keys, or with
// node keys that are not such (as before anchors could carry the admin key: nothing rotated).
async function provenRotations(seen, anchors) {
  if (!seen.nodeKeys) return { proven: false, problem: "", later: [] };
  const cluster = seen.logKey.name.slice(0, seen.logKey.name.lastIndexOf("/"));
  let later;
  try {
    later = (await statedWitnessKeys(seen.nodeKeys, cluster)).later;
  } catch (e) {
    return { proven: false, problem: `its node keys are not such: ${e.message}`, later: [] };
  }
  if (!anchors || !anchors.admin) return { proven: false, problem: "no anchors carry the admin ledger's key", later };
  try {
    if (anchors.admin.name !== `${cluster}/admin`) throw new Error(`the anchors' admin key is not ${cluster}/admin's`);
    const admin = await verifyCheckpointNote(seen.nodeKeys.checkpoint, anchors.admin, []);
    if (!admin.logOk) throw new Error("their admin checkpoint is not signed by the anchors' admin key");
  } catch (e) {
    return { proven: false, problem: `the node keys are not proven: ${e.message}`, later };
  }
  return { proven: true, problem: "", later };
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

// ISO 4217's minor-unit exponents, the table of node/currency.py (PROTOCOL 7.2), here so that a
// page shows a signed tally's amounts without taking the exponent from the gateway it checks
// (tests/unit/node/test_currency.py holds the two equal).
const MINOR_UNIT_DIGITS = {
  0: "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF",
  2: "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN BWP BYN BZD " +
    "CAD CDF CHE CHF CHW CNY COP COU CRC CUC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL " +
    "GHS GIP GMD GTQ GYD HKD HNL HRK HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK LBP LKR " +
    "LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD PAB " +
    "PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP " +
    "SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD USN UYU UZS VED VES WST XCD XCG YER ZAR ZMW ZWG ZWL",
  3: "BHD IQD JOD KWD LYD OMR TND",
  4: "CLF UYW",
};
const DIGITS_OF = new Map(Object.entries(MINOR_UNIT_DIGITS).flatMap(([d, codes]) => codes.split(" ").map((c) => [c, Number(d)])));

// The decimals of a currency's minor unit (2 for SAR, 0 for JPY, 3 for KWD); null for a code
// without one here, whose amounts are then shown as the whole minor units they are.
const minorUnitDigits = (currency) => (typeof currency === "string" && DIGITS_OF.has(currency) ? DIGITS_OF.get(currency) : null);

// An amount of minor units (an integer Number, or a BigInt as decodeMsgpack gives one past 2**32)
// as the decimal string of currency units the gateway writes (/api/ledgers/L/funds), `decimals`
// the currency's exponent (minorUnitDigits): 2025 gives "20.25" with 2, "2025" with 0, "2.025"
// with 3, and with null (a code without one) the minor units as they are. From its digits,
// never divided as a float: a double is exact only to 2**53, and an amount may be up to 2**64 - 1.
// Throws RangeError for a Number that is not an integer.
function amountText(minor, decimals) {
  const value = BigInt(minor);
  const places = decimals || 0;
  const digits = (value < 0n ? -value : value).toString().padStart(places + 1, "0");
  const whole = places ? `${digits.slice(0, -places)}.${digits.slice(-places)}` : digits;
  return `${value < 0n ? "-" : ""}${whole}`;
}

// --- where to read, and which keys to trust (PROTOCOL 15.5) ------------------------------------
// The page's fragment, which a browser never sends to a server: "gateway=<base URL>" names the
// gateway to read (default: the one that served the page; a copy of the page opened from a
// mirror or a local file names it), "anchors=<base64url of the anchors text>" the publisher's
// trust anchors. Only keys from the anchors, or from the genesis bytes they anchor, are trusted.
const fragment = new URLSearchParams(location.hash.slice(1));
const gatewayBase = (fragment.get("gateway") || "").replace(/\/+$/, "");
const apiURL = (path) => gatewayBase + path;

const bytesOfBase64url = (text) => {
  const plain = text.replace(/-/g, "+").replace(/_/g, "/");
  return bytesOfBase64(plain + "=".repeat((4 - (plain.length % 4)) % 4));
};
const NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/;

async function anchoredKey(vkey, where) {
  const key = await parseVkey(vkey);
  if (key.alg !== 4) throw new Error(`${where}: not a cosignature (type 0x04) key`);
  return key;
}

// 15.5: "vledger-anchors v1", then ledger, witness and observer lines and at most one admin line
// (the admin ledger's checkpoint key, type 0x01 named <cluster>/admin) in any order.
async function parseAnchors(text) {
  if (!text.endsWith("\n")) throw new Error("the anchors' last line does not end in a newline");
  // atob skips white space, so a CR or a tab inside a vkey would pass here as 15.5 refuses it.
  if (/[\x00-\x09\x0b-\x1f]/.test(text) || text.length > 65536) throw new Error("not an anchors text");
  const lines = text.slice(0, -1).split("\n");
  if (lines[0] !== "vledger-anchors v1") throw new Error("not an anchors text (no vledger-anchors v1 line)");
  const ledgers = new Map(), witnesses = new Map(), observers = new Map();
  let admin = null, recosign = null;
  for (const [i, line] of lines.slice(1).entries()) {
    const where = `anchors line ${i + 2}`, f = line.split(" ");
    if (f[0] === "ledger" && f.length === 3 && NAME.test(f[1]) && /^[0-9a-f]{64}$/.test(f[2]) && !ledgers.has(f[1])) {
      ledgers.set(f[1], f[2]);
    } else if (f[0] === "witness" && f.length === 2) {
      const key = await anchoredKey(f[1], where);
      if (witnesses.has(key.name)) throw new Error(`${where}: witness ${key.name} is anchored twice`);
      witnesses.set(key.name, key);
    } else if (f[0] === "observer" && f.length === 3 && NAME.test(f[1]) && !observers.has(f[1])) {
      observers.set(f[1], await anchoredKey(f[2], where));
    } else if (f[0] === "admin" && f.length === 2 && admin === null) {
      admin = await parseVkey(f[1]);
      if (admin.alg !== 1 || !/^.+\/admin$/.test(admin.name)) {
        throw new Error(`${where}: not an admin ledger's checkpoint key (type 0x01, named <cluster>/admin)`);
      }
    } else if (f[0] === "recosign_interval_ms" && f.length === 2 && recosign === null) {
      // The cluster's interval when not the default (10.7), how old a head may grow (11.4).
      if (!/^[1-9][0-9]{0,15}$/.test(f[1]) || !Number.isSafeInteger(Number(f[1]))) {
        throw new Error(`${where}: recosign_interval_ms is a decimal from 1 to 2**53 - 1 (ms)`);
      }
      recosign = Number(f[1]);
    } else {
      throw new Error(`${where}: not a ledger, witness, observer, admin or recosign_interval_ms line`);
    }
  }
  return { ledgers, witnesses: [...witnesses.values()], observers, admin, recosign };
}

// The anchors in force: {anchors, source, sha256} or {error, source}, or null when none were given.
// sha256 is the hex SHA-256 of the anchors' bytes (`sha256sum anchors.txt`): anchors in a link are
// whoever wrote the link's, so the banner shows it for the voter to compare with the publisher's.
let anchorState = null;
async function anchorsOf(bytes, source) {
  try {
    return { anchors: await parseAnchors(textOf(bytes)), source, sha256: hexOf(await sha256(bytes)) };
  } catch (e) {
    return { error: e.message, source };
  }
}
async function loadAnchors() {
  const given = fragment.get("anchors");
  if (given === null) return anchorState;
  let bytes;
  try {
    bytes = bytesOfBase64url(given);
  } catch (e) {
    anchorState = { error: e.message, source: "the page's address" };
    return anchorState;
  }
  anchorState = await anchorsOf(bytes, "the page's address");
  return anchorState;
}

// The publisher's anchors, or null (the keys are then the gateway's word); throws for anchors
// that were given but are not valid, so that nothing is shown as checked against them.
function currentAnchors() {
  if (anchorState && anchorState.error) throw new Error(`the anchors given are not valid: ${anchorState.error}`);
  return anchorState && anchorState.anchors;
}

// A banner at the top of the page: what the keys are checked against, and a file input for
// the publisher's anchors file; `changed` runs after one is picked.
function anchorsBar(changed) {
  const bar = el("section", { id: "anchors" });
  const show = () => {
    const s = anchorState;
    const pick = el("input", { id: "anchors-file", type: "file", accept: ".txt,text/plain", "aria-label": "the publisher's anchors file" });
    pick.addEventListener("change", async () => {
      const file = pick.files[0];
      if (!file) return;
      anchorState = await anchorsOf(new Uint8Array(await file.arrayBuffer()), file.name);
      show();
      await changed();
    });
    let say;
    if (s && s.anchors) {
      say = el("span", {},
        el("span", { class: "ok" }, `✓ Checked against the anchors from ${s.source}: ` +
          `${s.anchors.ledgers.size} ledgers, ${s.anchors.witnesses.length} witness keys, ${s.anchors.observers.size} observer keys` +
          `${s.anchors.admin ? ", the admin ledger's key" : ""}. ` +
          "No key is taken from the gateway."),
        " They are the publisher's only if their SHA-256 is the one the publisher gives: ",
        el("code", { id: "anchors-sha256" }, s.sha256), ".");
    } else if (s && s.error) {
      say = el("span", { class: "bad" }, `✗ The anchors from ${s.source} are not valid: ${s.error}. Nothing is shown as verified.`);
    } else {
      say = el("span", { class: "bad" }, "⚠ Not checked against the publisher's anchors: the keys used below are the " +
        "gateway's own word, and a hostile gateway can serve its own. Open this page with the address the " +
        "publisher gives (#anchors=…), or pick the publisher's anchors file:");
    }
    // A gateway named by the link, not the site that served the page: say so (15.5). A copy of
    // a page opened from a mirror names one; so does a link a phisher wrote.
    const where = gatewayBase === "" ? [] : [el("p", { class: "warn" }, "Reading the gateway ",
      el("code", { id: "anchors-gateway" }, gatewayBase), ", named by the page's address, not the site that served this page.")];
    bar.replaceChildren(el("p", {}, say, " ", pick), ...where);
  };
  show();
  document.querySelector("main").prepend(bar);
  return bar;
}

const u64be = (n) => {
  const bytes = new Uint8Array(8);
  new DataView(bytes.buffer).setBigUint64(0, BigInt(n));
  return bytes;
};

// 15.5: the genesis record the gateway serves for `ledger`, accepted only when the link
// recomputed from its bytes (2.1 checksum, 2.3 link) is the anchored one; its payload (the rules
// with the pinned checkpoint key and the outside witnesses) is then taken from those bytes.
async function anchoredGenesis(ledger, anchors) {
  const wanted = anchors.ledgers.get(ledger);
  if (!wanted) throw new Error(`${ledger} is not among the publisher's anchors`);
  const served = await getJSON(`/api/ledgers/${encodeURIComponent(ledger)}/records/0`);
  const record = decodeMsgpack(bytesOfBase64(served.record));
  const checksum = await sha256(record.content);
  const link = await sha256(concat(record.prev, checksum, u64be(record.height), u64be(record.nonce),
    u64be(record.accepted), utf8.encode(record.origin)));
  if (hexOf(link) !== wanted) {
    throw new Error(`the genesis record served for ${ledger} is not the anchored one (its hash ${hexOf(link).slice(0, 16)}…, ` +
      `the publisher's ${wanted.slice(0, 16)}…)`);
  }
  const content = decodeMsgpack(record.content);
  if (!equal(checksum, record.checksum) || !equal(link, record.link) || Number(record.height) !== 0 ||
      content.ledger !== ledger || content.kind !== "genesis") {
    throw new Error(`the genesis record served for ${ledger} is malformed`);
  }
  return content.payload;
}

// --- keys, checkpoints and tallies, checked here (PROTOCOL 13.5, 13.8, 11, 15.5) -----------------

// The keys `ledger`'s checkpoints are checked with. With the publisher's anchors (15.5): the
// checkpoint key and the outside witnesses (rules.witnesses, 13.9) from the genesis bytes the
// anchors name, the cluster's witness keys from the anchors. Without (`anchors` null), the same
// keys as the gateway states them: its own word ({anchored: false}), which a page must say.
// `outside` is {names, quorum} of the outside witnesses the genesis lists (null: none);
// `recosign` the recosign_interval_ms a head's freshness is judged by (11.4), from the same source.
async function ledgerKeys(ledger, anchors) {
  if (anchors) {
    const genesis = await anchoredGenesis(ledger, anchors);
    const rules = (genesis && genesis.rules) || {};
    const log = typeof rules.checkpoint_key === "string" ? await parseVkey(rules.checkpoint_key) : adminKey(ledger, rules, anchors);
    const listed = await Promise.all((Array.isArray(rules.witnesses) ? rules.witnesses : []).map(parseVkey));
    return { log, anchored: true, standby: await standbyKey(rules),
             witnesses: [...anchors.witnesses, ...listed], outside: outsideOf(ledger, rules, listed, log),
             recosign: anchors.recosign === null || anchors.recosign === undefined ? RECOSIGN_INTERVAL_MS : anchors.recosign };
  }
  const info = await getJSON(`/api/ledgers/${encodeURIComponent(ledger)}`);
  const pinned = info.genesis && info.genesis.rules && info.genesis.rules.checkpoint_key;
  const unpinned = typeof pinned !== "string";
  if (unpinned && !isAdmin(ledger, info.genesis && info.genesis.rules)) throw new Error(`the genesis of ${ledger} pins no checkpoint key`);
  const listed = await Promise.all((Array.isArray(info.genesis.rules.witnesses) ? info.genesis.rules.witnesses : []).map(parseVkey));
  const shown = await getJSON(`/api/ledgers/${encodeURIComponent(ledger)}/checkpoint`);
  const cluster = await Promise.all(Object.values(shown.witness_keys).map(parseVkey));
  // Without anchors every key here is the gateway's word, so is its interval: one lying could as
  // well cosign its old view anew with a witness key it states; one frozen states the true one.
  const stated = Number(shown.recosign_interval_ms);
  // The admin ledger's key the gateway states (its log_key): its word, as every key here.
  const log = await parseVkey(unpinned ? shown.log_key : pinned);
  return { log, witnesses: [...cluster, ...listed], anchored: false,
           standby: await standbyKey(info.genesis.rules), outside: outsideOf(ledger, info.genesis.rules, listed, log),
           recosign: Number.isSafeInteger(stated) && stated > 0 ? stated : RECOSIGN_INTERVAL_MS };
}

// The admin ledger's genesis pins no checkpoint key (PROTOCOL 16.1): its home's key signs its
// checkpoints, and the anchors carry it on their admin line (15.5), named <cluster>/admin.
const isAdmin = (ledger, rules) => ledger === "admin" && !!rules && rules.type === "admin";
function adminKey(ledger, rules, anchors) {
  if (!isAdmin(ledger, rules)) throw new Error(`the genesis of ${ledger} pins no checkpoint key`);
  if (!anchors.admin) throw new Error("the admin ledger's genesis pins no checkpoint key and the anchors carry no admin line");
  return anchors.admin;
}

// The standby's checkpoint key a genesis pins (rules.standby_key, PROTOCOL 10.9), or null.
const standbyKey = (rules) => typeof rules.standby_key === "string" ? parseVkey(rules.standby_key) : null;

// The outside witnesses a genesis' rules list (13.9, section 3): {names, quorum}, null for none;
// throws for a list without a quorum from 1 to its length (nothing could then be witnessed), and
// for one named as a witness of the cluster of `log` (the ledger's key, <cluster>/<ledger>):
// cosigners are told apart by name, so its lines would count as that cluster witness's.
function outsideOf(ledger, rules, listed, log) {
  if (!listed.length && rules.quorum == null) return null;
  if (!listed.length || !Number.isInteger(rules.quorum) || rules.quorum < 1 || rules.quorum > listed.length) {
    throw new Error(`the genesis of ${ledger} lists outside witnesses without a quorum of them [bad_genesis]`);
  }
  const own = `${log.name.slice(0, log.name.lastIndexOf("/"))}/witness/`;
  const posing = listed.find((key) => key.name.startsWith(own));
  if (posing) {
    throw new Error(`the genesis of ${ledger} lists ${posing.name}, named as a witness of the cluster, as an outside witness [bad_genesis]`);
  }
  return { names: new Set(listed.map((k) => k.name)), quorum: rules.quorum };
}

// A ledger's checkpoint note checked as a receipt's is (14.3 step 7): signed by `logKey`, the key
// in force at its size; else, for a ledger whose genesis pins a standby key (`keys.standby`), by
// that key, and then it must state an epoch from 2 (10.9) in its one epoch line and carry at
// least one valid cosignature by a cluster witness of `keys` (never an outside one, 13.5 step 3): the standby's key is held by a node that is
// no home until a handover, which only the records show, and a witness checks it before it
// cosigns (the key alone could sign a tree of its own making, with any record in it). With
// outside witnesses in the genesis (`keys.outside`), its quorum of them must have cosigned (13.9).
// Returns verifyCheckpointNote's {checkpoint, logOk, cosigned} and the key that signed it ({logKey}).
async function verifyLedgerNote(note, logKey, keys) {
  const seen = await verifyCheckpointNote(note, logKey, keys.witnesses);
  if (seen.logOk) {
    // 10.9: the pinned keys alternate, epoch 2 is the standby's: the genesis key (the replaced
    // home's) passes for no checkpoint of an even epoch (outsider o16 F5).
    if (keys.standby && epochOf(note) % 2n === 0n) throw new Error("a checkpoint of an even epoch not signed by the standby key [bad_epoch]");
    // A later epoch's note (a failback's epoch 3 is the genesis key's, which epoch 2 may have
    // fenced as stolen) counts, as the standby's key does, only with a witness's cosignature.
    return witnessedEnough({ ...seen, logKey }, keys, epochOf(note) > 1n);
  }
  if (!keys.standby) return { ...seen, logKey };
  const standby = await verifyCheckpointNote(note, keys.standby, keys.witnesses);
  if (!standby.logOk) return { ...seen, logKey };
  if (epochOf(note) % 2n !== 0n) throw new Error("a checkpoint signed by the standby key without one epoch line of an even epoch [bad_epoch]");
  return witnessedEnough({ ...standby, logKey: keys.standby }, keys, true);
}

// The epoch a checkpoint note states (10.9): 1n without an epoch line (one whose first word is
// "vledger-epoch"), else its one line's number; throws [bad_checkpoint] for more than one, or one
// of another form.
function epochOf(note) {
  const epochs = parseNote(note).text.split("\n").slice(3).filter((line) => line.split(" ")[0] === "vledger-epoch");
  if (!epochs.length) return 1n;
  const epoch = epochs.length === 1 && /^vledger-epoch ([1-9][0-9]{0,19}) [a-z0-9][a-z0-9._-]{0,63}$/.exec(epochs[0]);
  if (!epoch || BigInt(epoch[1]) < 2n) throw new Error("an epoch line that is not one line of an epoch from 2 [bad_checkpoint]");
  return BigInt(epoch[1]);
}

// `seen` (a note its key signed) once its valid cosignatures are what verifyLedgerNote asks:
// the genesis' quorum of outside witnesses, and one cluster witness at least (not an outside one,
// 13.5 step 3) for the standby's key or an epoch from 2 (`needsWitness`); throws [no_quorum] otherwise.
function witnessedEnough(seen, keys, needsWitness) {
  const valid = new Set(seen.cosigned.filter((c) => c.ok).map((c) => c.name));
  if (keys.outside) {
    // Outside witnesses, not names: two names sharing a key are one (13.5 step 1, review r13 #9).
    const group = witnessGroups(keys.witnesses);
    const got = new Set([...keys.outside.names].filter((name) => valid.has(name)).map((n) => group.get(n) ?? n)).size;
    if (got < keys.outside.quorum) {
      throw new Error(`${got} of the outside witnesses the genesis lists cosigned the checkpoint, where its quorum is ` +
        `${keys.outside.quorum} (13.9) [no_quorum]`);
    }
  }
  // Only a cluster witness counts here (13.5 step 3): it holds the records and applies 10.9's
  // rules before it cosigns; an outside witness runs generic tlog-witness software that cosigns
  // any tree consistent with the last it saw, a thief's forged epoch included (outsider o24 F0).
  const outsideNames = keys.outside ? keys.outside.names : new Set();
  if (needsWitness && ![...valid].some((name) => !outsideNames.has(name))) {
    throw new Error("a checkpoint of an epoch from 2 (or signed by the standby key) that no cluster witness cosigned " +
      "(an outside witness's cosignature does not count): nothing shows the handover that would make its key a home's (10.9) [no_quorum]");
  }
  return seen;
}

// That `record` (its bytes) stands at `index` in the tree of the verified `checkpoint` (12.4), by
// the gateway's inclusion proof; throws with the step that failed.
async function proveIncluded(ledger, record, index, checkpoint) {
  const path = `/api/ledgers/${encodeURIComponent(ledger)}/proof/inclusion?index=${index}&size=${checkpoint.size}`;
  const answer = await getJSON(path);
  await verifyInclusion(await leafHash(record), index, checkpoint.size, answer.proof.map(bytesOfHex), checkpoint.root);
}

// The gateway's checkpoint of `ledger`, checked with `keys` (ledgerKeys) as witnessedNote checks
// a note: signed by the key in force at its size, along the rotation records it lists (13.8: each
// signed by the key before it and proven in its tree) or by the standby's key in an epoch from 2
// (verifyLedgerNote), each cosignature by a key of `keys` or a later generation of one that the
// answer's node keys (14.2, 16.6) carry and `anchors`' admin key proves. Returns witnessedNote's
// result and the answer's node keys as parseReceipt gives them (`nodeKeys`, null for none).
async function checkedCheckpoint(ledger, keys, anchors = null) {
  const shown = await getJSON(`/api/ledgers/${encodeURIComponent(ledger)}/checkpoint`);
  const rotations = (shown.rotations || []).map((r) => ({ index: r.index, record: bytesOfBase64(r.record) }));
  if (keys.standby && rotations.length) throw new Error(`${ledger} pins a standby key: it never rotates (13.8) [standby_rotation]`);
  const n = shown.node_keys;
  const nodeKeys = n && typeof n.checkpoint === "string" ? { checkpoint: n.checkpoint, rotations: parseProven(n.rotations, "node keys") } : null;
  const seen = await witnessedNote(shown.note, await followKeyChain(keys.log, rotations, ledger), keys, nodeKeys, anchors, ledger);
  if (seen.logOk) for (const r of rotations) await proveIncluded(ledger, r.record, r.index, seen.checkpoint);
  return { ...seen, nodeKeys, recosign: keys.recosign, needed: neededWitnesses(distinctWitnesses(keys.witnesses)),
    groups: witnessGroups(keys.witnesses) };
}

// Which witness keys count on a checkpoint note, the one rule of every page (PROTOCOL 15.5, 14.3
// steps 6 and 7, 16.6), as `vledger receipt verify` follows them (ReceiptKeys.following): the
// keys the page holds (`keys.witnesses`, ledgerKeys': the anchors' generation 0, or the gateway's
// newest) and, once the node keys (`nodeKeys`, of a receipt or a checkpoint answer) are proven by
// the admin key of `anchors` (provenRotations), the later generations of those witnesses they
// state. tally.html, charity.html and dashboard.html checked with the held keys alone, so after 3
// of 5 witnesses rotated every live checkpoint was STALE there, a false alarm (outsider45).
// Returns {rotations (provenRotations'), later (its later keys of held witnesses,
// heldWitnessRotations), unheld (those of them the page does not hold), witnesses (the keys a
// note is checked with: the held ones, and the unheld ones when proven)}.
async function witnessKeysOf(keys, logKey, nodeKeys, anchors) {
  const rotations = nodeKeys ? await provenRotations({ nodeKeys, logKey }, anchors) : { proven: false, problem: "", later: [] };
  const later = heldWitnessRotations(rotations.later, keys.witnesses);
  const held = new Set(keys.witnesses.map((k) => `${k.name} ${hexOf(k.keyId)}`));
  const unheld = later.filter((l) => !held.has(`${l.key.name} ${hexOf(l.key.keyId)}`));
  return { rotations, later, unheld, witnesses: rotations.proven ? [...keys.witnesses, ...unheld.map((l) => l.key)] : keys.witnesses };
}

// A ledger's checkpoint `note` checked by verifyLedgerNote with the witness keys witnessKeysOf
// says count (`logKey` the key in force at its size, `keys` ledgerKeys'), and each cosignature
// judged as 14.3 step 7 says: a line by the newest generation's key counts; a replaced key's
// stamped at or after its rotation's until is refused [bad_cosignature], and not counted on a
// checkpoint larger than the `cosigned` that rotation states; without proof, a line by a later
// key the node keys state is verified, shown and NOT counted (the held keys' count as before).
// Returns verifyLedgerNote's {checkpoint, logOk, cosigned, logKey} and: `rotations`
// (provenRotations'), `later` (the later keys of held witnesses), `judged` ([{c, generation (of
// a key the page does not hold, else null), index (its rotation's admin record, else null),
// status: "counted" | "skipped" | "refused" | "invalid" | "unproven", reason}]), `counted` and
// `uncounted` (lines), `refused` (a line fails the note), `witnesses` (the names whose line
// counted) and `inForce` (linesInForce of the counted lines: each witness's oldest and newest
// time, 11.4's since_ms and fresh_ms).
async function witnessedNote(note, logKey, keys, nodeKeys, anchors, ledger) {
  const w = await witnessKeysOf(keys, logKey, nodeKeys, anchors);
  const seen = await verifyLedgerNote(note, logKey, { ...keys, witnesses: w.witnesses });
  const own = { ...w.rotations, later: w.later };
  const size = seen.checkpoint.size, judged = [], entries = [], witnesses = new Set();
  let counted = 0, uncounted = 0, refused = false;
  for (const c of seen.cosigned) {
    const l = w.unheld.find((x) => x.key === c.key);
    const { rotated, i } = witnessEntry(c, own);
    const out = cosignatureOutOfForce(c.time, size, ledger, rotated, i);
    const one = { c, generation: l ? l.generation : null, index: l ? l.index : null, status: "counted", reason: "" };
    judged.push(one);
    if (!c.ok) { one.status = "invalid"; refused = true; continue; }
    if (out.refused) { Object.assign(one, { status: "refused", reason: out.refused }); refused = true; continue; }
    if (out.skipped) { Object.assign(one, { status: "skipped", reason: out.skipped }); uncounted += 1; continue; }
    counted += 1;
    witnesses.add(c.name);
    entries.push({ c, rotated, i });
  }
  if (!w.rotations.proven && w.unheld.length) {
    const found = await verifyCheckpointNote(note, seen.logKey, w.unheld.map((l) => l.key));
    for (const c of found.cosigned) {
      const l = w.unheld.find((x) => x.key === c.key);
      judged.push({ c, generation: l.generation, index: l.index, status: "unproven", reason: w.rotations.problem });
      uncounted += 1;
    }
  }
  return { ...seen, rotations: w.rotations, later: w.later, judged, counted, uncounted, refused, witnesses,
    inForce: linesInForce(entries, size, ledger, witnessGroups(keys.witnesses)) };
}

// The rotations of `ledger`'s witnesses and observers that the node keys of its checkpoint
// answer carry (provenRotations), from a checkpoint checked with the keys of `anchors`
// (ledgerKeys); none when the answer does not verify.
async function statedLaterKeys(ledger, anchors) {
  try {
    const seen = await checkedCheckpoint(ledger, await ledgerKeys(ledger, anchors), anchors);
    if (!seen.logOk) return { proven: false, problem: "", later: [] };
    return seen.rotations;
  } catch (e) {
    return { proven: false, problem: "", later: [] };
  }
}

// Whether a tally body (decoded, `s`) signed by generation `i` of an observer whose `rotated`
// generations follow its anchored one counts (16.6, as `vledger tally` judges it): the newest
// generation's key whatever its at_ms and height; a replaced one's only with an at_ms before the
// until of the rotation that replaced it and, when that rotation states `tallied`, of a ledger
// listed there at a height no larger. Returns "" when it counts, else why not.
function outOfForce(s, ledger, rotated, i) {
  if (i === rotated.length) return "";
  const replacing = rotated[i];
  const why = `signed by its key replaced at admin record ${replacing.index}`;
  if (BigInt(s.at_ms) >= replacing.until) return `${why}, stamped at or after that rotation's until`;
  if (replacing.tallied === null) return "";
  if (!replacing.tallied.has(ledger)) return `${why}, which its rotation says never tallied ${ledger}`;
  if (BigInt(s.height) > replacing.tallied.get(ledger)) {
    return `${why}, at height ${s.height}, past the height ${replacing.tallied.get(ledger)} its rotation says that key had tallied`;
  }
  return "";
}

// Whether a cosignature/v1 line stamped `time` (POSIX seconds) by generation `i` of a witness
// whose `rotated` generations follow its anchored one counts on a checkpoint of `size` records
// of `ledger` (16.6, 14.3 step 7): the newest generation's whatever its time; a replaced one's
// stamped at or after the until of the rotation that replaced it is refused ({refused}); when
// that rotation states `cosigned`, on a checkpoint of a ledger not listed there or larger than
// the size listed it is not counted ({skipped}). Returns {} when it counts, else the reason.
function cosignatureOutOfForce(time, size, ledger, rotated, i) {
  if (i === rotated.length) return {};
  const replacing = rotated[i];
  const why = `by its key replaced at admin record ${replacing.index}`;
  if (BigInt(time) * 1000n >= replacing.until) return { refused: `${why}, stamped at or after that rotation's until [bad_cosignature]` };
  if (replacing.cosigned === null) return {};
  if (!replacing.cosigned.has(ledger)) return { skipped: `${why}, which its rotation says never cosigned ${ledger}` };
  if (BigInt(size) > replacing.cosigned.get(ledger)) {
    return { skipped: `${why}, on ${size} records, past the ${replacing.cosigned.get(ledger)} its rotation says that key had cosigned` };
  }
  return {};
}

// A verified cosignature entry `c` (verifyCheckpointNote's) with what judges its lines (16.6):
// `rotated`, the proven later generations of its witness (provenRotations' `later`, none when
// not proven), and `i`, the generation of its key (a held key is generation 0 unless they name it).
function witnessEntry(c, rotations) {
  const rotated = rotations.proven ? rotations.later.filter((l) => l.key.name === c.name) : [];
  return { c, rotated, i: rotated.findIndex((l) => hexOf(l.key.publicKey) === hexOf(c.key.publicKey)) + 1 };
}

// Per witness (the name `groups`, witnessGroups', says stands for it: names sharing a key are one
// witness, 13.5 step 1, whatever name each line carries), the oldest and newest times (POSIX
// seconds) of its lines that count on a
// checkpoint of `size` records of `ledger`: each line of every one of `entries` (witnessEntry's)
// judged by cosignatureOutOfForce as a first line is (14.3 step 7, 16.6), so that a line its
// replaced key stamped at or after its rotation's until, or on a checkpoint past what that key
// had cosigned, is never its oldest nor its newest (11.4: whoever holds the replaced keys of a
// majority kept a frozen view fresh, review r11 D). A witness with no such line is left out.
function linesInForce(entries, size, ledger, groups = new Map()) {
  const by = new Map();
  for (const { c, rotated, i } of entries) {
    const witness = groups.get(c.name) ?? c.name;
    for (const t of c.times) {
      const out = cosignatureOutOfForce(t, size, ledger, rotated, i);
      if (out.refused || out.skipped) continue;
      const had = by.get(witness) || { oldest: t, newest: t };
      by.set(witness, { oldest: t < had.oldest ? t : had.oldest, newest: t > had.newest ? t : had.newest });
    }
  }
  return by;
}

// Each observer's latest signed tally in the gateway's /api/ledgers/<ledger>/tally answer,
// checked here (section 11): its Ed25519 signature over the exact body with the anchors' key of
// that observer (never the public_key the gateway serves beside it; an observer the anchors do
// not list fails), or without anchors the gateway's; then the body decoded from those bytes, which
// must be that observer's tally of `ledger`. Returns, per observer, {observer, publicKey (hex),
// ok (true; false with `problem`; null: none published, or with `unproven`), snapshot (the
// decoded body when ok)}. With anchors, an observer the node keys (`rotations`, provenRotations)
// say rotated has the anchored key as its generation 0 and their keys as its later ones: when
// they are proven (the anchors' admin key), a body counts only by the key in force for it
// (outOfForce: a replaced key's past its window or its `tallied` is a failure, as for
// `vledger tally`); when they are not, a body any of those keys signed is `unproven` (ok null,
// the reason), neither counted nor a forgery: the anchored key may be a stolen replaced one.
// An observer the gateway lists again is a failure ("listed twice"), its first entry alone read:
// a gateway listing one stolen key's body twice and leaving another observer out made as many
// bodies as observers, which "agreed" (review r9).
async function checkTallies(ledger, answer, anchors, rotations = { proven: false, problem: "", later: [] }) {
  const checked = [], listed = new Set();
  for (const o of answer.observers) {
    const anchored = anchors && anchors.observers.get(o.observer);
    const publicKey = anchors ? (anchored ? hexOf(anchored.publicKey) : null) : o.public_key;
    const c = { observer: o.observer, publicKey, ok: null, problem: "", snapshot: null, unproven: "", twice: false };
    checked.push(c);
    if (listed.has(o.observer)) {
      c.ok = false;
      c.twice = true;
      c.problem = "listed twice by the gateway: not counted";
      continue;
    }
    listed.add(o.observer);
    if (o.body && anchors && !anchored) {
      c.ok = false;
      c.problem = "not an observer of the publisher's anchors";
    } else if (o.body && publicKey) {
      const body = bytesOfHex(o.body), signature = bytesOfHex(o.signature);
      const rotated = anchors ? rotations.later.filter((x) => x.node === o.observer) : [];
      const keys = [bytesOfHex(publicKey), ...rotated.map((x) => x.key.publicKey)];
      const signers = [];
      for (const [i, key] of keys.entries()) if (await verifyEd25519(key, signature, body)) signers.push(i);
      if (!signers.length) {
        c.ok = false;
        c.problem = "INVALID";
        continue;
      }
      // The key shown is the one that verified the body, not the anchored generation 0 a
      // rotation replaced (outsider24 G6): a visitor compares it with the publisher's list.
      c.publicKey = hexOf(keys[signers[0]]);
      if (rotated.length && !rotations.proven) {
        c.unproven = signers[0] === 0
          ? `signed by its anchored key, which its rotation at admin record ${rotated[0].index} replaced; this page ` +
            `cannot prove whether that key was still in force (${rotations.problem}): not counted`
          : `signed by a later key of its own (its rotation at admin record ${rotated[signers[0] - 1].index}), which this ` +
            `page cannot prove (${rotations.problem}): not counted`;
        continue;
      }
      try {
        const s = decodeMsgpack(body);
        if (s.observer !== o.observer || s.ledger !== ledger || !s.tally) throw new Error("another observer's or ledger's");
        const why = signers.map((i) => outOfForce(s, ledger, rotated, i));
        if (why.every((w) => w)) {
          c.ok = false;
          c.problem = `NOT counted: ${why[0]}`;
          continue;
        }
        c.ok = true;
        c.publicKey = hexOf(keys[signers[why.findIndex((w) => !w)]]);
        c.snapshot = s;
      } catch (e) {
        c.ok = false;
        c.problem = `signed body unusable: ${e.message}`;
      }
    }
  }
  return checked;
}

// Each witness name of the keys `keys` -> the name that stands for its witness (13.5 step 1,
// node/note.py's witness_groups): the least of the names joined to it by a shared public key
// (directly or through a chain of them); one name's generations are one witness already.
function witnessGroups(keys) {
  const parent = new Map(), owner = new Map();
  const root = (name) => { while (parent.get(name) !== name) name = parent.get(name); return name; };
  for (const key of keys) {
    if (!parent.has(key.name)) parent.set(key.name, key.name);
    const hex = hexOf(key.publicKey);
    if (!owner.has(hex)) owner.set(hex, key.name);
    const [low, high] = [root(key.name), root(owner.get(hex))].sort();
    parent.set(high, low);
  }
  return new Map([...parent.keys()].map((name) => [name, root(name)]));
}

// How many witnesses the keys `keys` are (witnessGroups).
function distinctWitnesses(keys) {
  return new Set(witnessGroups(keys).values()).size;
}

// How many of `trusted` distinct witnesses a head's age is judged over (11.4, node/cosigning.py's
// needed_witnesses): `quorum` or a majority of them, the larger; 0 when none is trusted. Counting
// the lines a note carries let a gateway pick them: 2 colluders' fresh lines and 1 honest old one
// of 5 witnesses had a fresh median (review r12).
function neededWitnesses(trusted, quorum = 0) {
  return trusted > 0 ? Math.max(quorum, Math.floor(trusted / 2) + 1) : 0;
}

// The time (ms) by which `needed` trusted witnesses, whose cosignature times are `times`, had
// cosigned (PROTOCOL 11.4, node/cosigning.py's quorum_since_ms): the needed-th oldest; null for
// fewer times (or `needed` 0).
function quorumSinceMs(times, needed) {
  const ordered = [...times].sort((a, b) => a - b);
  return needed > 0 && needed <= ordered.length ? ordered[needed - 1] : null;
}

// The time (ms) since which `needed` trusted witnesses, whose newest cosignature times are
// `times`, have vouched (11.4, node/cosigning.py's quorum_fresh_ms): the needed-th newest; null
// for fewer times (or `needed` 0).
function quorumFreshMs(times, needed) {
  const ordered = [...times].sort((a, b) => b - a);
  return needed > 0 && needed <= ordered.length ? ordered[needed - 1] : null;
}

// What a checkpoint checkedCheckpoint verified (`seen`) says of its age, over a majority of the
// witnesses the page trusts (`seen.needed`, neededWitnesses of the keys it checked with: the
// anchors' and the genesis', else the gateway's), never over the lines the gateway chose to
// show, each by its lines that verified and count (linesInForce, with the witness key rotations
// `rotations` proves, provenRotations'): its size; `since`, when that many had vouched for it
// (ms, 11.4's since_ms: the needed-th oldest of their first times, so that fewer clocks never
// decide; a count behind it for longer is stale whatever at_ms its observer claims); `fresh`,
// since when that many vouch for it still (11.4's fresh_ms, of each one's newest line:
// witnesses cosign a quiet ledger's checkpoint again, 10.7, so an old one is an old view; null,
// fewer vouched: stale); `needed`; and `recosign`, the interval it is judged by (ledgerKeys).
function vouched(seen, rotations = { proven: false, later: [] }) {
  const { origin, size } = seen.checkpoint;
  // witnessedNote's lines that count, when it judged them (every page's checkpoint, 15.5).
  const entries = seen.cosigned.filter((c) => c.ok).map((c) => witnessEntry(c, rotations));
  const times = [...(seen.inForce || linesInForce(entries, size, origin.slice(origin.lastIndexOf("/") + 1), seen.groups)).values()];
  return { size, since: quorumSinceMs(times.map((t) => Number(t.oldest) * 1000), seen.needed),
    fresh: quorumFreshMs(times.map((t) => Number(t.newest) * 1000), seen.needed), needed: seen.needed,
    recosign: seen.recosign };
}

// The ledger's checkpoint the gateway serves, checked here as vote.html checks one (with the
// anchors' keys when given), read after the tallies: an honest observer counts only records a
// signed checkpoint covers (PROTOCOL 10.7), so a body past it claims records nobody can check,
// and one far short of it for long is stale (11.4). Returns its size (a BigInt) and the
// observers' key rotations its node keys carry (16.6: `rotations`, provenRotations: proven with
// the anchors' admin key), or a null size and the problem when it did not verify (nobody is
// then judged ahead or stale; the node keys of an answer its home signed are still read).
async function checkedHead(ledger, anchors) {
  let rotations = { proven: false, problem: "", later: [] };
  try {
    const seen = await checkedCheckpoint(ledger, await ledgerKeys(ledger, anchors), anchors);
    if (seen.logOk) rotations = seen.rotations;
    if (!seen.logOk || seen.cosigned.some((c) => !c.ok) || seen.refused) throw new Error("its signatures did NOT verify");
    return { ...vouched(seen), rotations, witnesses: seen.witnesses };
  } catch (e) {
    return { size: null, since: null, fresh: null, needed: 0, recosign: RECOSIGN_INTERVAL_MS, problem: e.message, rotations };
  }
}

// PROTOCOL 11.4's `--stale-after` default, as `vledger tally` judges with it.
const STALE_AFTER_MS = 10000;
// How far an at_ms may run ahead of this computer's clock and still be taken at its word (11.4).
const MAX_CLOCK_SKEW_MS = 60000;

// The cluster's recosign_interval_ms default (10.7): how often witnesses cosign a quiet ledger's
// checkpoint again. With anchors, the interval is theirs (their recosign_interval_ms line, else
// this): a gateway stating a longer one would keep a frozen view fresh for longer (ledgerKeys).
const RECOSIGN_INTERVAL_MS = 300000;

// Whether the checkpoint verified here (checkedHead's `head`) is **stale** (11.4): a majority of
// the trusted witnesses last vouched for it (`fresh`) more than the recosign interval plus
// STALE_AFTER_MS before `nowMs` (this computer's clock), or fewer of them vouched at all (`fresh`
// null while `needed` is not 0: a gateway stripping lines). Witnesses cosign a growing ledger's
// new checkpoints and a quiet one's again, so a live gateway's never gets that old; a frozen
// one's does. With no witness trusted, nothing is judged (the page warns of it anyway).
function headStale(head, nowMs = Date.now()) {
  if (head.size === null || !head.needed) return false;
  if (head.fresh === null || head.fresh === undefined) return true;
  // A time beyond the skew ahead says nothing of when it was made (11.4; review r22 F2).
  return nowMs - head.fresh > head.recosign + STALE_AFTER_MS || head.fresh - nowMs > MAX_CLOCK_SKEW_MS;
}

// The warning a page adds to its verdict for a stale head (headStale), "" for one that is not.
function staleHeadText(head, nowMs = Date.now()) {
  if (!headStale(head, nowMs)) return "";
  return ` STALE: no majority of the witnesses vouched for the checkpoint verified here within ` +
    `${(head.recosign + STALE_AFTER_MS) / 1000} s (by this computer's clock): this gateway shows an old view.`;
}

// When a page showing a head that is not stale must look again: when it would turn stale (ms
// from now), null for one not judged (headStale) or stale already.
function headRecheck(head, nowMs = Date.now()) {
  if (head.size === null || head.fresh === null || headStale(head, nowMs)) return null;
  return head.fresh + head.recosign + STALE_AFTER_MS - nowMs + 1;
}

// What a visitor can tell of the checkpoint's age (checkedHead's `head`): since when a majority
// of its witnesses vouch for it, against this computer's clock, and STALE past headStale's limit.
function cosignedText(head, nowMs = Date.now()) {
  if (head.size === null) return "";
  if (head.fresh === null) {
    return headStale(head, nowMs) ? `STALE: fewer than ${head.needed} of the trusted witnesses vouched for the ` +
      `checkpoint verified here (${head.size} records): this gateway shows an old view, or strips their lines.` : "";
  }
  const ago = Math.max(0, Math.round((nowMs - head.fresh) / 1000));
  const text = `The checkpoint verified here holds ${head.size} records; a majority of its witnesses last vouched for it at ` +
    `${new Date(head.fresh).toISOString()}, ${ago} s before this computer's clock.`;
  if (!headStale(head, nowMs)) return text;
  return `STALE: ${text} Witnesses vouch again every ${Math.round(head.recosign / 1000)} s even while nothing is ` +
    "written: this gateway shows an old view, and the ledger may have moved on.";
}

// The observers whose verified body (checkTallies' ok ones) is **stale** as 11.4 says: it counts
// fewer records than the verified checkpoint holds (`height + 1 < size`) and was made (`at_ms`)
// more than STALE_AFTER_MS before `nowMs` (this computer's clock), or dated more than
// MAX_CLOCK_SKEW_MS after it (a date to come says nothing of when it was made), or while a
// majority of the witnesses vouched for the checkpoint (`sinceMs`, checkedHead's `since`) more
// than STALE_AFTER_MS ago: an observer signs at most once per tally_interval_ms once it counted what it holds
// (11.1), so one behind for longer is stopped, stuck or far behind, and its count is not the
// ledger's. Returns {stale (names), recheck (ms until a body now behind the checkpoint would turn
// stale, null for none)}; with no verified checkpoint (`size` null) nobody is judged.
function staleObservers(checked, size, nowMs = Date.now(), sinceMs = null) {
  const stale = [], waits = [];
  if (size === null || size === undefined) return { stale, recheck: null };
  for (const c of checked) {
    if (!c.ok || !c.snapshot || BigInt(c.snapshot.height) + 1n >= BigInt(size)) continue;
    const age = Math.max(nowMs - Number(c.snapshot.at_ms), sinceMs === null ? -Infinity : nowMs - sinceMs);
    if (age > STALE_AFTER_MS || Number(c.snapshot.at_ms) - nowMs > MAX_CLOCK_SKEW_MS) stale.push(c.observer);
    else waits.push(STALE_AFTER_MS - age + 1);
  }
  return { stale, recheck: waits.length ? Math.min(...waits) : null };
}

// The verdict on verified snapshots (checkTallies' ok ones), as 15.4 step 6 compares the latest
// ones: when all `wanted` observers signed at one height, they agree or some differ (what two
// snapshots share to agree, PROTOCOL 11.2: all but observer and at_ms); else still counting.
// No observer is the reference (11.4): `differing` names those outside the one largest group
// that agrees, and every observer when no group is larger than the others (two that disagree).
// With `ahead` observers left out of `signed` (a body past the checkpoint verified here, 11.4),
// the others never agree, only still count: which observer is ahead depends on the checkpoint the
// gateway serves, so an older one validly signed makes an honest observer ahead, and one stolen
// key of two then "agreed" alone at an older height (review r8).
// `wanted` counts distinct observers: one listed twice never stands for another (review r9).
function tallyVerdict(signed, wanted, ahead = 0) {
  const agreed = (s) => JSON.stringify([s.ledger, s.height, s.head, s.tally, s.counted],
    (_, v) => typeof v === "bigint" ? v.toString() : v instanceof Uint8Array ? hexOf(v) : v);
  const height = signed.length ? signed[0].height : null;
  const distinct = new Set(signed.map((x) => x.observer)).size;
  const atOne = distinct > 0 && distinct === signed.length && distinct === wanted && signed.every((x) => x.height === height);
  const sizes = new Map();
  for (const x of atOne ? signed : []) sizes.set(agreed(x), (sizes.get(agreed(x)) || 0) + 1);
  const largest = Math.max(0, ...sizes.values());
  const groups = [...sizes].filter(([, n]) => n === largest);
  const kept = sizes.size > 1 && groups.length === 1 ? groups[0][0] : null;
  const differing = sizes.size > 1 ? signed.filter((x) => agreed(x) !== kept).map((x) => x.observer) : [];
  const status = !atOne || (ahead > 0 && !differing.length) ? "still_counting" : differing.length ? "mismatch" : "agree";
  return { status, height, differing };
}

// tallyVerdict on checkTallies' answer as the pages judge it (15.5): the bodies of observers
// ahead of the checkpoint verified here (`isAhead`) and of those whose rotated key is unproven
// are judged apart, and while any is, the others never agree (with `listed` observers wanted in
// all). Only the ahead ones were kept apart: a gateway stating a made-up key_rotation of an
// honest observer made it unproven, and a stolen key's body alone "agreed" (review r9).
// `served` is the gateway's own verdict: its `recount` names the observers whose tally a verifier's
// recount of the same records contradicts (an open tally_recount alert, PROTOCOL 11.4). Unsigned,
// it can only take an agreement away: one observer alone agrees with itself (o21 F4).
function checkedVerdict(checked, listed, isAhead, served = null) {
  const signed = checked.filter((c) => c.ok && !isAhead(c)).map((c) => c.snapshot);
  const apart = checked.filter((c) => isAhead(c) || c.unproven).length;
  const v = tallyVerdict(signed, listed - apart, apart);
  const named = new Set(checked.map((c) => c.observer));
  const said = served && Array.isArray(served.recount) ? served.recount : [];
  const recount = [...new Set(said.filter((o) => typeof o === "string" && named.has(o)))].sort();
  if (!recount.length) return { ...v, recount };
  return { status: "mismatch", height: v.height, differing: [...new Set([...v.differing, ...recount])].sort(), recount };
}

// The observers the anchors list that signed no tally the gateway served: left out of its answer,
// or listed without a body. With anchors every one must have signed (15.5), so the others never
// agree meanwhile; said by name, else a gateway hiding the dissenting observer kept "still
// counting" on screen for ever with no word of why (outsider26 I3).
function withheldObservers(answer, anchors) {
  if (!anchors) return [];
  const signed = new Set(answer.observers.filter((o) => o.body).map((o) => o.observer));
  return [...anchors.observers.keys()].filter((name) => !signed.has(name)).sort();
}

function withheldText(names) {
  if (!names.length) return "";
  const one = names.length === 1;
  return ` ${names.join(", ")} (anchored) signed no tally here: the gateway withheld ${one ? "it" : "them"} or ` +
    `${one ? "it is" : "they are"} behind.`;
}

// A failed request says what failed, on every page (outsider32 R4: tally.html and charity.html
// went blank on a 503 store_damaged or an unreachable gateway): the gateway's error code and
// message (15.2), its HTTP status when the body is no such error, or that it was not reached.
async function getJSON(path) {
  let answer;
  try {
    answer = await fetch(apiURL(path), { headers: { Accept: "application/json" } });
  } catch (e) {
    throw fetchError(`gateway unreachable: ${gatewayBase || location.origin} did not answer (${e.message})`, "unreachable");
  }
  let body = null;
  try { body = await answer.json(); } catch (e) { if (answer.ok) throw fetchError(`the gateway's answer is not JSON: ${e.message}`, "bad_answer"); }
  if (!answer.ok) {
    const stated = body && body.error && typeof body.error.code === "string";
    throw fetchError(stated ? `${body.error.message} [${body.error.code}]` : `the gateway answered HTTP ${answer.status}`,
      stated ? body.error.code : undefined);
  }
  return body;
}

function fetchError(message, code) {
  const error = new Error(message);
  error.code = code;
  return error;
}

// What a page shows in place of its verdict when a request failed: nothing was checked, so no
// verdict of agreement (nor a table) stands; the page asks again.
function failedText(e, again) {
  return `NOT verified: ${e.message}. No verdict can be given${again ? `; asking again every ${again / 1000} s` : ""}.`;
}

function onEvents(handlers) {
  const source = new EventSource(apiURL("/api/events"));
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

// The menu of a page's ledgers: those of ``type``, then every ledger the gateway refuses (15.2's
// `refused`: a damaged copy states no type, so it may be one), marked with the refusal's code,
// whose own page then says the refusal. A refused charity ledger vanished from charity.html
// without a word (outsider34 #4). Returns the names offered.
async function fillLedgers(select, type) {
  const answer = await getJSON("/api/ledgers");
  const listed = answer.ledgers.filter((l) => !l.refused && (type === undefined || l.type === type));
  const refused = answer.ledgers.filter((l) => l.refused);
  select.replaceChildren(
    ...listed.map((l) => el("option", { value: l.ledger }, l.ledger)),
    ...refused.map((l) => el("option", { value: l.ledger, "data-refused": l.refused.code },
      `${l.ledger}: REFUSED by this gateway: ${l.refused.message} [${l.refused.code}]`)));
  const names = [...listed, ...refused].map((l) => l.ledger);
  const wanted = new URLSearchParams(location.search).get("ledger");
  if (wanted && names.includes(wanted)) select.value = wanted;
  return names;
}

// The navigation keeps the fragment: the gateway and the anchors go with the visitor.
document.addEventListener("DOMContentLoaded", () => {
  for (const a of document.querySelectorAll("header a")) a.href = a.getAttribute("href") + location.hash;
});

window.vledger = {
  hexOf, bytesOfHex, bytesOfBase64, sha256, leafHash, nodeHash, verifyInclusion, verifyEd25519,
  parseVkey, parseNote, parseCheckpoint, verifyCheckpointNote, parseReceipt, statedWitnessKeys, decodeMsgpack, followKeyChain,
  getJSON, failedText, onEvents, el, fillLedgers, amountText, minorUnitDigits,
  parseAnchors, loadAnchors, currentAnchors, anchorsBar, anchoredGenesis,
  ledgerKeys, verifyLedgerNote, witnessKeysOf, witnessedNote, proveIncluded, checkedCheckpoint, checkTallies, tallyVerdict, checkedVerdict, statedLaterKeys,
  withheldObservers, withheldText,
  heldWitnessRotations, witnessEntry, linesInForce,
  provenRotations, outOfForce, cosignatureOutOfForce, checkedHead, cosignedText, staleObservers, quorumSinceMs, STALE_AFTER_MS,
  quorumFreshMs, headStale, RECOSIGN_INTERVAL_MS, vouched, staleHeadText, headRecheck, distinctWitnesses, neededWitnesses,
  witnessGroups, witnessedEnough, outsideOf,
};
