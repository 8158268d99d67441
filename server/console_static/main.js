// Start-up: the token form, and the view named by the URL hash (#tags, #trend, #server).
"use strict";

xc.views = { tags: xc.tags, trend: xc.trend, server: xc.server };
xc.view = null;

xc.route = () => {
  const { view, params } = xc.readHash();
  const name = view in xc.views ? view : "tags";
  if (xc.view && xc.view !== name && xc.views[xc.view].hide) xc.views[xc.view].hide();
  xc.view = name;
  for (const v of Object.keys(xc.views)) {
    document.getElementById("view-" + v).hidden = v !== name;
    document.getElementById("nav-" + v).classList.toggle("active", v === name);
  }
  xc.say("");
  xc.views[name].show(params);
};

document.addEventListener("DOMContentLoaded", () => {
  xc.tags.init();
  xc.trend.init();
  const form = document.getElementById("token-form");
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const input = document.getElementById("token-input");
    // sessionStorage: gone when the tab closes; never in the URL, never in a cookie.
    sessionStorage.setItem(xc.TOKEN_KEY, input.value.trim());
    input.value = "";
    form.hidden = true;
    xc.route();
  });
  document.getElementById("token-button").addEventListener("click", () => xc.askToken(""));
  window.addEventListener("hashchange", xc.route);
  if (document.getElementById("nav-trend")) {
    // The Trend link opens the last trend, not an empty one.
    document.getElementById("nav-trend").addEventListener("click", (e) => {
      e.preventDefault();
      location.hash = "#trend?" + new URLSearchParams(xc.trend.urlParams()).toString();
    });
  }
  xc.route();
});
