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
  getJSON, onEvents, el, fillLedgers,
};
