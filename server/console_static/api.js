// The console's shared pieces: requests to /api/console (with the token), messages,
// the view's state in the URL hash, and formatting. Every string from the server is
// put on the page with textContent, never as HTML.
"use strict";

const xc = {};

xc.TOKEN_KEY = "xtsdb-console-token";

// A request refused with a message the page shows (the server's own words).
class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}
xc.ApiError = ApiError;

xc.token = () => sessionStorage.getItem(xc.TOKEN_KEY) || "";

// GET /api/console/<route>?<params>; the token goes in a header, never in the URL.
xc.api = async (route, params) => {
  const url = "/api/console/" + route + "?" + new URLSearchParams(params || {}).toString();
  const headers = {};
  if (xc.token()) headers.Authorization = "Bearer " + xc.token();
  const resp = await fetch(url, { headers, cache: "no-store" });
  let body = null;
  try {
    body = await resp.json();
  } catch (e) {
    body = { error: "the server answered " + resp.status + " without JSON" };
  }
  if (resp.status === 401) {
    xc.askToken(xc.token() ? "That token was refused." : "");
    throw new ApiError(401, "a token is needed: " + body.error);
  }
  if (!resp.ok) throw new ApiError(resp.status, body.error || "error " + resp.status);
  return body;
};

xc.say = (text) => {
  const box = document.getElementById("message");
  box.textContent = text;
  box.hidden = !text;
};

// Show an API failure; a 401 has already asked for a token.
xc.fail = (err) => {
  if (err instanceof ApiError && err.status === 401) return;
  xc.say(err.message || String(err));
};

xc.askToken = (why) => {
  const form = document.getElementById("token-form");
  form.hidden = false;
  if (why) xc.say(why);
  document.getElementById("token-input").focus();
};

// -- the URL: "#view?key=value&..." so a link opens the same view ------------------

xc.readHash = () => {
  const raw = location.hash.replace(/^#/, "");
  const at = raw.indexOf("?");
  const view = (at < 0 ? raw : raw.slice(0, at)) || "tags";
  const params = new URLSearchParams(at < 0 ? "" : raw.slice(at + 1));
  return { view, params };
};

xc.writeHash = (view, params) => {
  const qs = new URLSearchParams(params || {}).toString();
  const hash = "#" + view + (qs ? "?" + qs : "");
  if (location.hash !== hash) history.replaceState(null, "", hash);
};

// -- formatting ------------------------------------------------------------------

xc.GOOD = 192;
xc.quality = (q) => (q >= 192 ? "good" : q >= 64 ? "uncertain" : "bad");

xc.iso = (us) => new Date(Math.floor(us / 1000)).toISOString().replace("Z", "");

xc.num = (v) => {
  if (v === null || v === undefined) return "";
  if (Number.isInteger(v)) return String(v);
  return Math.abs(v) >= 1e6 || (Math.abs(v) < 1e-3 && v !== 0) ? v.toExponential(4) : v.toPrecision(6);
};

xc.age = (us) => {
  const s = Math.max(0, Date.now() / 1000 - us / 1e6);
  if (s < 60) return Math.round(s) + " s";
  if (s < 3600) return Math.round(s / 60) + " min";
  if (s < 86400) return (s / 3600).toFixed(1) + " h";
  return (s / 86400).toFixed(1) + " d";
};

xc.bytes = (n) => {
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i += 1; }
  return (i ? n.toFixed(1) : String(n)) + " " + units[i];
};

// A table cell holding text only.
xc.cell = (row, text, cls) => {
  const td = row.insertCell();
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
};
