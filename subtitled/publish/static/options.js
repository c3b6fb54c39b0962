// URL parameters of the overlay page: `/overlay?lang=de&size=48&bg=transparent`.
// Every parameter is optional; a value that cannot be used is ignored with a
// warning (on the console), and the default applies.

export const DEFAULTS = Object.freeze({
  languages: null,        // null: every language the daemon translates into
  source: true,
  lines: 2,               // text rows per track
  font: "system-ui, sans-serif",
  size: "4.5vh",
  weight: "600",
  color: "#ffffff",
  unstable: "#a9b4bf",
  tcolor: "#ffe27a",
  tunstable: "#b8a873",
  outline: 3,             // px; 0: none
  ocolor: "#000000",
  box: "transparent",     // background behind the text
  bg: "transparent",      // page background (OBS browser source: keep it transparent)
  position: "bottom",
  align: "start",         // left, or right for a right-to-left language
  width: "80vw",
  cps: 17,                // reading speed, characters per second
  min: 1.5,               // seconds a line stays after its last change, at least
  fade: 6,                // seconds after its last change a line fades; 0: never
  badge: true,
});

const POSITIONS = ["bottom", "top", "middle"];
const ALIGNS = ["start", "left", "center", "right"];
const TRUE = ["1", "true", "yes", "on"];
const FALSE = ["0", "false", "no", "off"];
const LANGUAGE_TAG = /^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$/;
const MAX_LANGUAGES = 8;

/**
 * Parse a query string. `supports(property, value)` says whether CSS accepts a
 * value (the browser's `CSS.supports`). Returns `{options, warnings}`.
 */
export function parseOptions(search, supports) {
  const params = new URLSearchParams(search);
  const options = Object.assign({}, DEFAULTS);
  const warnings = [];
  const warn = (name, value, expected) =>
    warnings.push(`?${name}=${value} ignored: expected ${expected}`);

  const get = (...names) => {
    for (const name of names) {
      if (params.has(name)) return [name, params.get(name).trim()];
    }
    return [null, null];
  };

  const [langName, langValue] = get("lang", "languages");
  if (langName !== null) {
    const tags = langValue.split(",").map((t) => t.trim()).filter((t) => t);
    const good = tags.filter((t) => LANGUAGE_TAG.test(t)).slice(0, MAX_LANGUAGES);
    if (good.length !== tags.length) warn(langName, langValue, "language tags like de,pt-BR");
    options.languages = [...new Set(good)];
  }

  const flag = (name) => {
    const [, value] = get(name);
    if (value === null) return;
    if (TRUE.includes(value.toLowerCase())) options[name] = true;
    else if (FALSE.includes(value.toLowerCase())) options[name] = false;
    else warn(name, value, "1 or 0");
  };
  flag("source");
  flag("badge");

  const number = (name, low, high, integer = false) => {
    const [, value] = get(name);
    if (value === null) return;
    const n = Number(value);
    if (value === "" || !Number.isFinite(n) || n < low || n > high || (integer && !Number.isInteger(n))) {
      warn(name, value, `${integer ? "an integer" : "a number"} from ${low} to ${high}`);
    } else {
      options[name] = n;
    }
  };
  number("lines", 1, 20, true);
  number("cps", 1, 1000);
  number("min", 0, 60);
  number("fade", 0, 3600);

  const [, outline] = get("outline");
  if (outline !== null) {
    if (FALSE.includes(outline.toLowerCase()) || outline === "none") options.outline = 0;
    else if (TRUE.includes(outline.toLowerCase()) && outline !== "1") options.outline = DEFAULTS.outline;
    else {
      const n = Number(outline.replace(/px$/, ""));
      if (Number.isFinite(n) && n >= 0 && n <= 20) options.outline = n;
      else warn("outline", outline, "a width in px from 0 to 20");
    }
  }

  const choice = (name, allowed, aliases = {}) => {
    const [, value] = get(name);
    if (value === null) return;
    const v = aliases[value.toLowerCase()] || value.toLowerCase();
    if (allowed.includes(v)) options[name] = v;
    else warn(name, value, allowed.join(", "));
  };
  choice("position", POSITIONS, {center: "middle"});
  choice("align", ALIGNS, {centre: "center"});

  const css = (name, property, normalise) => {
    const [, value] = get(name);
    if (value === null) return;
    const v = normalise(value);
    if (v !== null && v.length <= 200 && supports(property, v)) options[name] = v;
    else warn(name, value, `a CSS ${property}`);
  };
  const colour = (value) => {
    if (/^[0-9a-f]{3,4}$|^[0-9a-f]{6}$|^[0-9a-f]{8}$/i.test(value)) return `#${value}`;  // '#' needs %23 in a URL
    if (value.toLowerCase() === "none") return "transparent";
    return value;
  };
  const length = (unit) => (value) => (/^\d+(\.\d+)?$/.test(value) ? `${value}${unit}` : value);
  for (const name of ["color", "unstable", "tcolor", "tunstable", "ocolor", "box", "bg"]) {
    css(name, "color", colour);
  }
  css("size", "font-size", length("px"));
  css("width", "width", length("vw"));
  css("weight", "font-weight", (v) => v);
  // Local fonts only: a family name or a list of them, never a URL.
  css("font", "font-family", (v) => (/[;{}()\\<>]|url/i.test(v) ? null : `${v}, ${DEFAULTS.font}`));

  return {options, warnings};
}
