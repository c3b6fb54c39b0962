// The overlay page: URL parameters -> style, feed -> caption tracks, and a badge.
// Parameters: see options.js and the README's table.
//
// A daemon with a token wants it on every request, these files included: the
// page passes its own `?token=` on to this module (overlay.html), and this module
// to the others, so they are imported here with the same query.

const query = new URL(import.meta.url).search;
const [{CaptionFeed}, {FeedConnection}, {parseOptions}, {Track}] = await Promise.all([
  import(`./captions.js${query}`),
  import(`./connection.js${query}`),
  import(`./options.js${query}`),
  import(`./tracks.js${query}`),
]);

const TICK_MS = 100;
const OFFLINE_BADGE_AFTER_MS = 1000;

let shownBadge = null;  // what the badge says now, to touch the DOM only on a change

const {options, warnings} = parseOptions(location.search, (p, v) => CSS.supports(p, v));
for (const warning of warnings) console.warn(`subtitled overlay: ${warning}`);
applyStyle(options);

const root = document.getElementById("overlay");
root.className = options.position;
const badge = document.getElementById("badge");
const pace = {cps: options.cps, minMs: options.min * 1000, fadeMs: options.fade * 1000};
const tracks = new Map();  // null (source) or language -> Track
const feed = new CaptionFeed();
const connection = new FeedConnection({
  feed,
  languages: options.languages,
  token: new URLSearchParams(location.search).get("token"),
  onChanges: applyChanges,
  onState: () => {
    document.documentElement.dataset.feed = connection.state;  // connecting | open | closed
    renderBadge();
  },
});

if (options.source) track(null);
for (const lang of options.languages || []) track(lang);
connection.start();
setInterval(() => {
  const now = Date.now();
  for (const t of tracks.values()) t.tick(now);
  renderBadge();
}, TICK_MS);

function track(lang) {
  let t = tracks.get(lang);
  if (!t) {
    t = new Track(root, lang, pace);
    tracks.set(lang, t);
    arrange();
  }
  return t;
}

// Text gathers where the tracks meet: the first track's at its bottom, the
// others' at their top; a lone track follows `position`.
function arrange() {
  let index = 0;
  for (const t of tracks.values()) {
    const lone = tracks.size === 1;
    t.setAnchor(index === 0 && !(lone && options.position === "top") ? "bottom" : "top");
    index += 1;
  }
}

function applyChanges(changes) {
  const now = Date.now();
  for (const change of changes) {
    if (change.type === "service" && options.languages === null) {
      for (const lang of feed.targets) track(lang);  // "all": what the daemon offers
    } else if (change.type === "segment") {
      const record = change.record;
      if (options.languages === null) {
        for (const lang of Object.keys(record.translations)) track(lang);
      }
      for (const [lang, t] of tracks) {
        t.update(record.key, record.textFor(lang), record.final, now);
      }
    }
  }
  renderBadge();
}

function renderBadge() {
  const notes = [];
  const offline = connection.state !== "open";
  if (offline && Date.now() - connection.awaySince >= OFFLINE_BADGE_AFTER_MS) {
    notes.push(["warn", "reconnecting\u2026"]);
  } else if (!offline) {
    if (feed.capture === "lost") {
      notes.push(["error", feed.captureDetail ? `audio lost: ${feed.captureDetail}` : "audio lost"]);
    } else if (feed.capture === "ended") {
      notes.push(["info", "audio ended"]);
    }
    const wantsTranslations = options.languages === null || options.languages.length > 0;
    if (feed.mode === "captions-only" && wantsTranslations) notes.push(["info", "captions only"]);
  }
  const level = notes.some(([l]) => l === "error") ? "error" : notes.some(([l]) => l === "warn") ? "warn" : "info";
  const text = notes.map(([, t]) => t).join(" \u00b7 ");
  const key = `${level}|${text}`;
  if (key === shownBadge) return;
  shownBadge = key;
  badge.textContent = text;
  badge.className = level;
  badge.hidden = !options.badge || !text;
}

function applyStyle(o) {
  const style = document.documentElement.style;
  const set = (name, value) => style.setProperty(`--${name}`, String(value));
  set("font", o.font);
  set("size", o.size);
  set("weight", o.weight);
  set("color", o.color);
  set("unstable", o.unstable);
  set("tcolor", o.tcolor);
  set("tunstable", o.tunstable);
  set("box", o.box);
  set("bg", o.bg);
  set("align", o.align);
  set("width", o.width);
  set("lines", o.lines);
  set("outline", outlineShadow(o.outline, o.ocolor));
}

/** An outline as text-shadow rings: works in every Chromium, OBS's included. */
function outlineShadow(widthPx, colour) {
  if (!(widthPx > 0)) return "none";
  const shadows = [];
  const rings = widthPx > 2 ? [widthPx, widthPx / 2] : [widthPx];
  for (const r of rings) {
    for (let i = 0; i < 16; i += 1) {
      const a = (i * Math.PI) / 8;
      shadows.push(`${(r * Math.cos(a)).toFixed(2)}px ${(r * Math.sin(a)).toFixed(2)}px 0 ${colour}`);
    }
  }
  return shadows.join(", ");
}
