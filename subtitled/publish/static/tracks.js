// One track of the overlay (the source, or one translation): its last lines,
// in a box `lines` rows high, paced for reading.
//
// Pacing rules, with `now` in milliseconds (given, never read here):
// - A line is one caption segment; long ones wrap. New lines join at the bottom
//   and older ones roll up, out of the box.
// - A line stays in full view for its length / `cps` seconds, and at least `min`
//   seconds, from when it appears, and for `min` seconds after its last change.
//   A new line that would push such a line (even partly) out of view waits.
// - Waiting is bounded: after MAX_DELAY_MS, or when more than MAX_WAITING lines
//   wait, the oldest one shows anyway, since live captions must not fall behind.
// - A line fades out `fade` seconds after its last change (never with fade 0).
//   A faded line keeps its place, invisible, so that the others do not move;
//   when every line of the track has faded, the track is cleared.
// - The text sits at the bottom of the box (anchor "bottom") or at its top
//   (anchor "top", for a track under another one): either way it rolls up once
//   the box is full, and nothing else ever moves it.
// - A replay after a reconnect is paced like live text: its last lines show.
// Stable and unstable text differ only in colour: the same font metrics mean that
// nothing reflows when the daemon commits a word.

const MAX_DELAY_MS = 5000;
const MAX_WAITING = 3;
const FADE_OUT_MS = 800;  // the CSS opacity transition of `.fading`
const MAX_RETIRED = 256;
const EPSILON_PX = 0.5;

// No import of captions.js: overlay.js loads every module itself, with the page's token.
function joinText(a, b) {
  return a && b ? `${a} ${b}` : a || b;
}

class Line {
  constructor(key, now) {
    this.key = key;
    this.el = document.createElement("div");
    this.el.className = "line";
    this.el.dir = "auto";  // a right-to-left translation reads, and aligns, as such
    this.el.dataset.key = key;
    const text = document.createElement("span");
    text.className = "text";
    this.stableEl = document.createElement("span");
    this.stableEl.className = "stable";
    this.unstableEl = document.createElement("span");
    this.unstableEl.className = "unstable";
    text.append(this.stableEl, this.unstableEl);
    this.el.append(text);
    this.state = "waiting";  // -> shown -> fading -> faded -> (removed)
    this.arrivedAt = now;
    this.shownAt = null;
    this.changedAt = now;
    this.fadingSince = null;
    this.stable = "";
    this.unstable = "";
    this.final = false;
  }

  get text() {
    return joinText(this.stable, this.unstable);
  }

  set(stable, unstable, final, now) {
    if (stable !== this.stable || unstable !== this.unstable) {
      this.changedAt = now;
      this.stable = stable;
      this.unstable = unstable;
      this.stableEl.textContent = stable;
      // The space before the unstable tail belongs to the tail, so that committing
      // it moves no glyph.
      this.unstableEl.textContent = stable && unstable ? ` ${unstable}` : unstable;
    }
    this.final = final;
    this.el.classList.toggle("final", final);
  }

  holdUntil(pace) {
    const readMs = (this.stable.length + this.unstable.length) * 1000 / pace.cps;
    return Math.max(this.shownAt + Math.max(readMs, pace.minMs), this.changedAt + pace.minMs);
  }
}

export class Track {
  /**
   * `lang`: null for the source, else the target language. `pace`: {cps, minMs, fadeMs}.
   */
  constructor(parent, lang, pace) {
    this.lang = lang;
    this.pace = pace;
    this.el = document.createElement("section");
    this.el.className = lang === null ? "track source" : "track translation";
    this.el.dataset.track = lang === null ? "source" : lang;
    if (lang !== null) this.el.lang = lang;
    this.content = document.createElement("div");
    this.content.className = "lines";
    this.el.append(this.content);
    parent.append(this.el);
    this.setAnchor("bottom");
    this.lines = new Map();    // key -> Line, waiting or on screen, in arrival order
    this.retired = new Map();  // key -> text of a line gone from the screen
  }

  /** "bottom" or "top": where the text sits while the box is not full. */
  setAnchor(anchor) {
    this.el.classList.toggle("anchor-top", anchor === "top");
  }

  /** New text for caption `key`: `{stable, unstable}`. */
  update(key, text, final, now) {
    let line = this.lines.get(key);
    if (!line) {
      const whole = joinText(text.stable, text.unstable);
      if (!whole || this.retired.get(key) === whole) return;  // nothing, or seen and gone
      this.retired.delete(key);
      line = new Line(key, now);
      this.lines.set(key, line);
    }
    line.set(text.stable, text.unstable, final, now);
    if ((line.state === "fading" || line.state === "faded") && line.changedAt === now) {
      line.state = "shown";  // a late revision brings it back
      line.el.classList.remove("fading");
    }
    this.admit(now);
  }

  /** Advance the clock: fade, remove, and let waiting lines in. */
  tick(now) {
    for (const line of this.lines.values()) {
      if (line.state === "shown" && this.pace.fadeMs > 0 &&
          now >= Math.max(line.holdUntil(this.pace), line.changedAt + this.pace.fadeMs)) {
        line.state = "fading";
        line.fadingSince = now;
        line.el.classList.add("fading");
      } else if (line.state === "fading" && now - line.fadingSince >= FADE_OUT_MS) {
        line.state = "faded";
      }
    }
    const lines = [...this.lines.values()];
    if (lines.length > 0 && lines.every((l) => l.state === "faded")) {
      for (const line of lines) this.retire(line);
    }
    this.admit(now);
    this.dropScrolledOut();
  }

  admit(now) {
    const waiting = [...this.lines.values()].filter((l) => l.state === "waiting");
    for (const [index, line] of waiting.entries()) {
      const force = now - line.arrivedAt >= MAX_DELAY_MS || waiting.length - index > MAX_WAITING;
      if (!this.show(line, now, force)) break;
    }
  }

  show(line, now, force) {
    this.content.append(line.el);
    const top = this.el.getBoundingClientRect().top;
    for (const other of this.lines.values()) {
      if (other === line || other.state === "waiting") continue;
      const rect = other.el.getBoundingClientRect();
      if (rect.top >= top - EPSILON_PX) break;  // this one and the later ones are in view
      if (!force && other.state === "shown" && now < other.holdUntil(this.pace)) {
        line.el.remove();  // would hide a line not read yet: wait
        return false;
      }
    }
    line.state = "shown";
    line.shownAt = now;
    this.dropScrolledOut();
    return true;
  }

  /** Remove lines rolled up out of view entirely. */
  dropScrolledOut() {
    const top = this.el.getBoundingClientRect().top;
    for (const line of this.lines.values()) {
      if (line.state === "waiting") continue;
      if (line.el.getBoundingClientRect().bottom > top + EPSILON_PX) break;
      this.retire(line);
    }
  }

  retire(line) {
    line.el.remove();
    this.lines.delete(line.key);
    this.retired.set(line.key, line.text);
    if (this.retired.size > MAX_RETIRED) this.retired.delete(this.retired.keys().next().value);
  }
}
