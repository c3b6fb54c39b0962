// The overlay's feed core: wire messages in, caption records out. No DOM, no socket,
// no clock, so it reads (and is tested) like protocol.py on the server side.
//
// Resuming (PROTOCOL.md, "Sequence numbers and resuming"): `lastSeq` is the seq of
// the last segment or status received, or the seq of a hello without `resume`
// that opens a connection. The shell reconnects with `?since=lastSeq`, and a
// message at or below `lastSeq` (or a revision already applied) is dropped.
//
// Daemon restarts. `subtitled run` keeps a transcript journal, so a restarted
// daemon numbers on after the old one (seq and segment ids): resuming with `since`
// is exact and nothing else is needed. A daemon without a journal numbers from 1
// again; the page tells a new numbering by
//   - a resuming hello whose `since` is ahead of the server's seq (the server then
//     replays everything it holds, `complete: false`);
//   - a hello whose `stream` (an id of the numbering, if the server sends one)
//     differs from the last one: the page then asks for everything (`resync`);
//   - a segment that cannot be a later revision of the record with its id: a
//     revision after a final, an older revision, or committed text that does not
//     extend what was committed (committed text never changes within a segment).
// Records are keyed `epoch:id`, and the epoch moves on with each new numbering:
// lines of the old one stay on screen and fade as usual, and new lines with the
// same ids never overwrite them.

const MAX_RECORDS = 512;

/** One caption segment as the page knows it: the latest revision, translations merged. */
export class CaptionRecord {
  constructor(key, msg, previous) {
    this.key = key;
    this.id = msg.id;
    this.rev = msg.rev;
    this.final = msg.status === "final";
    this.committed = stringOr(msg.committed, "");
    this.partial = this.final ? "" : stringOr(msg.partial, "");
    this.text = stringOr(msg.text, joinText(this.committed, this.partial));
    // A revision that lacks a language keeps what the last one said: stable text is
    // never retracted (PROTOCOL.md), and a missing language is not an empty one.
    this.translations = Object.assign({}, previous ? previous.translations : {});
    const given = msg.translations && typeof msg.translations === "object" ? msg.translations : {};
    for (const [lang, t] of Object.entries(given)) {
      if (t && typeof t === "object") {
        this.translations[lang] = {stable: stringOr(t.stable, ""), unstable: stringOr(t.unstable, "")};
      }
    }
  }

  /** `{stable, unstable}` for the source (lang null) or one target language. */
  textFor(lang) {
    if (lang === null) return {stable: this.committed, unstable: this.partial};
    const t = this.translations[lang];
    return t || {stable: "", unstable: ""};
  }
}

export class CaptionFeed {
  constructor() {
    this.lastSeq = null;     // resume point; null before the first hello
    this.epoch = 0;          // bumped when the daemon on the other end is a new one
    this.stream = undefined;  // the numbering the resume point belongs to
    this.mode = null;        // "captions-only" | "translating", from hello
    this.capture = null;     // starting | running | lost | ended
    this.captureDetail = "";
    this.targets = [];       // languages the daemon translates into
    this.records = new Map(); // "epoch:id" -> CaptionRecord, oldest first
    this.helloSeen = false;  // on the current connection
  }

  /** The `since` to reconnect with, or null for a fresh start. */
  get since() {
    return this.lastSeq;
  }

  /** A new connection is about to open. */
  connecting() {
    this.helloSeen = false;
  }

  newEpoch(seq) {
    if (this.records.size > 0) this.epoch += 1;
    this.lastSeq = seq;
  }

  /** Apply one parsed message; returns a list of changes for the view. */
  apply(msg) {
    if (!msg || typeof msg !== "object") return [];
    if (msg.type === "hello") return this.applyHello(msg);
    if (msg.type === "segment") return this.applySegment(msg);
    if (msg.type === "translation") return this.applyTranslation(msg);
    if (msg.type === "status") return this.applyStatus(msg);
    return [];  // pong, subscribed, error, or a type added later: ignored
  }

  applyHello(msg) {
    const first = !this.helloSeen;
    this.helloSeen = true;
    this.mode = stringOr(msg.mode, this.mode);
    this.capture = stringOr(msg.capture, this.capture);
    const targets = msg.languages && Array.isArray(msg.languages.targets) ? msg.languages.targets : [];
    this.targets = targets.filter((t) => typeof t === "string");
    const seq = typeof msg.seq === "number" ? msg.seq : 0;
    const changes = [{type: "service"}];
    const resume = msg.resume && typeof msg.resume === "object" ? msg.resume : null;
    const restarted = resume !== null && !resume.complete && typeof resume.since === "number" &&
      resume.since > seq;
    if (restarted) {
      this.newEpoch(0);  // numbering began again: the replay that follows is all new
    } else if (typeof msg.stream === "string" && this.stream !== undefined &&
               msg.stream !== this.stream && resume !== null) {
      this.newEpoch(0);  // resumed against another numbering: ask for all of it
      changes.push({type: "resync"});
    } else if (resume === null && first) {
      this.lastSeq = seq;
    }
    if (typeof msg.stream === "string") this.stream = msg.stream;
    return changes;
  }

  applySegment(msg) {
    if (typeof msg.id !== "number" || typeof msg.rev !== "number") return [];
    if (typeof msg.seq === "number") {
      if (this.lastSeq !== null && msg.seq <= this.lastSeq) return [];  // already applied
      this.lastSeq = msg.seq;
    }
    let key = `${this.epoch}:${msg.id}`;
    let previous = this.records.get(key);
    if (previous) {
      const same = msg.rev === previous.rev && stringOr(msg.text, "") === previous.text;
      if (same) return [];
      if (!continues(previous, msg)) {
        this.newEpoch(typeof msg.seq === "number" ? msg.seq : this.lastSeq);
        key = `${this.epoch}:${msg.id}`;
        previous = undefined;
      }
    }
    const record = new CaptionRecord(key, msg, previous);
    this.records.delete(key);
    this.records.set(key, record);
    while (this.records.size > MAX_RECORDS) this.records.delete(this.records.keys().next().value);
    return [{type: "segment", record}];
  }

  /** New translations for a revision whose words came in a `segment` message. */
  applyTranslation(msg) {
    if (typeof msg.id !== "number" || typeof msg.rev !== "number") return [];
    if (typeof msg.seq === "number") {
      if (this.lastSeq !== null && msg.seq <= this.lastSeq) return [];
      this.lastSeq = msg.seq;
    }
    const key = `${this.epoch}:${msg.id}`;
    const previous = this.records.get(key);
    // A later revision or the final already carries newer translations than these.
    if (!previous || previous.final || previous.rev !== msg.rev) return [];
    const record = new CaptionRecord(key, {
      id: previous.id, rev: previous.rev, status: "partial", text: previous.text,
      committed: previous.committed, partial: previous.partial, translations: msg.translations,
    }, previous);
    this.records.set(key, record);
    return [{type: "segment", record}];
  }

  applyStatus(msg) {
    if (typeof msg.seq === "number") {
      if (this.lastSeq !== null && msg.seq <= this.lastSeq) return [];
      this.lastSeq = msg.seq;
    }
    this.capture = stringOr(msg.capture, this.capture);
    this.captureDetail = stringOr(msg.detail, "");
    return [{type: "status"}];
  }
}

/** Whether `msg` can be a later revision of `previous` from the same daemon. */
function continues(previous, msg) {
  if (previous.final || msg.rev <= previous.rev) return false;
  return stringOr(msg.committed, "").startsWith(previous.committed);
}

export function joinText(a, b) {
  return a && b ? `${a} ${b}` : a || b;
}

function stringOr(value, fallback) {
  return typeof value === "string" ? value : fallback;
}
