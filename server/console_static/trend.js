// The trend view: one chart of several tags, drawn from the server's plot mode (at
// most 4 points per pixel column), re-requested on every range change; live mode
// polls at most once a second; the table and the CSV hold exactly what is drawn, or
// min/max/avg/count per interval from the aggregate API over the same range.
"use strict";

xc.trend = {
  PRESETS: { "15m": 9e5, "1h": 36e5, "24h": 864e5, "7d": 6048e5, "30d": 2592e6, "1y": 31556952e3 },
  TABLE_ROWS: 500,
  AGGREGATES: ["min", "max", "avg", "count"],
  // Intervals (µs) "auto" picks from: the shortest giving at most AUTO_BUCKETS per tag.
  NICE: [1, 5, 10, 30, 60, 300, 600, 900, 1800, 3600, 10800, 21600, 43200, 86400, 604800,
    2592000, 31536000].map((s) => s * 1e6),
  AUTO_BUCKETS: 200,
  tableMode: "points", // or "agg"
  interval: "auto", // or a number of µs
  shownAgg: null, // the aggregate answer the table shows (agg mode)
  tableSeq: 0,
  tags: [],
  span: 36e5, // ms shown
  end: null, // ms of the right edge; null: now (follows the clock)
  live: false,
  seq: 0,
  drawnSeq: 0,
  shown: null, // the plot answer the chart was drawn from
  timing: null, // {request_ms, drawn_ms} of the last draw
  timer: null,
  relayoutTimer: null,

  init() {
    for (const b of document.querySelectorAll("#presets button")) {
      b.addEventListener("click", () => this.setRange(this.PRESETS[b.dataset.last], null));
    }
    document.getElementById("range-apply").addEventListener("click", () => this.applyAbsolute());
    document.getElementById("live").addEventListener("change", (e) => {
      this.live = e.target.checked;
      if (this.live) this.end = null;
      this.refresh();
    });
    document.getElementById("csv").addEventListener("click", () => this.download());
    document.getElementById("table-mode").addEventListener("change", (e) => {
      this.tableMode = e.target.value === "agg" ? "agg" : "points";
      this.refresh();
    });
    document.getElementById("table-interval").addEventListener("change", (e) => {
      this.interval = e.target.value === "auto" ? "auto" : Number(e.target.value);
      this.refresh();
    });
  },

  // Open the view on some tags (from the tag browser).
  open(names) {
    this.tags = names;
    this.end = null; // newly picked tags open on the latest data
    location.hash = "#trend?" + new URLSearchParams(this.urlParams()).toString();
  },

  show(params) {
    try {
      const tags = JSON.parse(params.get("tags") || "[]");
      this.tags = Array.isArray(tags) ? tags.filter((t) => typeof t === "string") : [];
    } catch (e) {
      this.tags = [];
    }
    const span = Number(params.get("span"));
    this.span = span > 0 ? span : 36e5;
    const end = Number(params.get("end"));
    this.end = params.has("end") && Number.isFinite(end) ? end : null;
    this.live = params.get("live") === "1";
    document.getElementById("live").checked = this.live;
    this.tableMode = params.get("table") === "agg" ? "agg" : "points";
    const interval = Number(params.get("interval"));
    this.interval = Number.isSafeInteger(interval) && interval > 0 ? interval : "auto";
    document.getElementById("table-mode").value = this.tableMode;
    const pick = document.getElementById("table-interval");
    pick.value = String(this.interval);
    if (pick.value !== String(this.interval)) { // a shared URL's own interval
      const opt = new Option(this.interval + " µs", String(this.interval));
      pick.add(opt);
      pick.value = opt.value;
    }
    this.refresh();
  },

  hide() {
    clearTimeout(this.timer);
    this.seq += 1; // answers still on their way are dropped
  },

  urlParams() {
    const p = { tags: JSON.stringify(this.tags), span: String(this.span) };
    if (this.end !== null) p.end = String(this.end);
    if (this.live) p.live = "1";
    if (this.tableMode === "agg") {
      p.table = "agg";
      if (this.interval !== "auto") p.interval = String(this.interval);
    }
    return p;
  },

  setRange(span, end) {
    this.span = Math.max(1, Math.round(span));
    this.end = end === null ? null : Math.round(end);
    if (this.end !== null && this.live) {
      this.live = false; // a range in the past does not move
      document.getElementById("live").checked = false;
    }
    this.refresh();
  },

  applyAbsolute() {
    const from = Date.parse(document.getElementById("range-from").value + "Z");
    const to = Date.parse(document.getElementById("range-to").value + "Z");
    if (!Number.isFinite(from) || !Number.isFinite(to)) {
      xc.say("Give both ends of the range.");
      return;
    }
    // An absurd range is sent anyway: the server's words say what is wrong with it.
    this.span = to - from;
    this.end = to;
    this.live = false;
    document.getElementById("live").checked = false;
    this.refresh();
  },

  range() {
    const to = this.end === null ? Date.now() : this.end;
    return [to - this.span, to];
  },

  chips() {
    const box = document.getElementById("trend-tags");
    box.replaceChildren();
    for (const name of this.tags) {
      const chip = document.createElement("span");
      chip.className = "chip";
      chip.textContent = name;
      const x = document.createElement("button");
      x.type = "button";
      x.textContent = "×";
      x.title = "remove";
      x.addEventListener("click", () => {
        this.tags = this.tags.filter((t) => t !== name);
        this.refresh();
      });
      chip.append(x);
      box.append(chip);
    }
    for (const b of document.querySelectorAll("#presets button")) {
      b.classList.toggle("active", this.end === null && this.PRESETS[b.dataset.last] === this.span);
    }
  },

  async refresh() {
    clearTimeout(this.timer);
    xc.writeHash("trend", this.urlParams());
    this.chips();
    const [from, to] = this.range();
    const fmt = (ms) => (Number.isFinite(ms) ? new Date(ms).toISOString().slice(0, 19) : "");
    document.getElementById("range-from").value = fmt(from);
    document.getElementById("range-to").value = fmt(to);
    if (!this.tags.length) {
      xc.say("Pick one or more tags in the Tags view.");
      return;
    }
    const seq = ++this.seq;
    const chart = document.getElementById("chart");
    const width = Math.min(4000, Math.max(100, Math.round(chart.clientWidth || 1000)));
    const params = {
      tags: JSON.stringify(this.tags),
      start: String(Math.round(from * 1000)),
      end: String(Math.round(to * 1000)),
      width: String(width),
    };
    const t0 = performance.now();
    let answer;
    try {
      answer = await xc.api("plot", params);
    } catch (err) {
      if (seq === this.seq) xc.fail(err);
      this.schedule(seq, t0);
      return;
    }
    if (seq !== this.seq) return;
    const t1 = performance.now();
    xc.say("");
    await this.draw(answer, from, to);
    // Drawn: Plotly has rendered and the browser has reached its next frame.
    await new Promise((resolve) => requestAnimationFrame(() => resolve()));
    if (seq !== this.seq) return;
    const t2 = performance.now();
    this.timing = { request_ms: t1 - t0, drawn_ms: t2 - t0 };
    performance.measure("xtsdb-trend-request", { start: t0, end: t1 });
    performance.measure("xtsdb-trend-drawn", { start: t0, end: t2 });
    this.shown = answer;
    this.drawnSeq = seq; // tests and the bench wait for a draw newer than one they saw
    if (this.tableMode === "agg") {
      try {
        this.shownAgg = await this.aggregates(answer);
      } catch (err) {
        if (seq === this.seq) xc.fail(err);
        this.shownAgg = null;
      }
      if (seq !== this.seq) return;
    }
    this.table();
    this.tableSeq = seq;
    this.schedule(seq, t0);
  },

  // Live mode: the next request at least 1 s after the previous one began.
  schedule(seq, t0) {
    if (!this.live || this.end !== null || seq !== this.seq || xc.view !== "trend") return;
    // With the aggregate table a cycle makes two requests: one cycle per 2 s.
    const period = this.tableMode === "agg" ? 2000 : 1000;
    const wait = Math.max(0, period - (performance.now() - t0));
    this.timer = setTimeout(() => this.refresh(), wait);
  },

  async draw(answer, from, to) {
    const units = [];
    for (const s of answer.series) if (!units.includes(s.unit)) units.push(s.unit);
    const traces = [];
    answer.series.forEach((s, i) => {
      const axis = units.indexOf(s.unit);
      const yaxis = axis === 0 ? "y" : "y" + (axis + 1);
      const x = s.ts.map((t) => t / 1000);
      traces.push({ type: "scatter", mode: "lines", name: s.tag, x, y: s.values, yaxis,
        connectgaps: false, line: { width: 1.5 }, meta: { tag: s.tag, i } });
      const bx = [], by = [];
      s.q.forEach((q, k) => {
        if (q < xc.GOOD) { bx.push(x[k]); by.push(s.values[k]); }
      });
      if (bx.length) {
        traces.push({ type: "scatter", mode: "markers", name: s.tag + " (not good)", x: bx, y: by,
          yaxis, marker: { symbol: "x", size: 8, color: "#c0392b" } });
      }
    });
    const layout = {
      margin: { t: 20, r: 60, b: 40, l: 60 },
      showlegend: true,
      legend: { orientation: "h" },
      dragmode: "zoom",
      xaxis: { type: "date", range: [from, to], autorange: false },
    };
    const nLeft = Math.ceil(units.length / 2), nRight = Math.floor(units.length / 2);
    const lo = 0.06 * Math.max(0, nLeft - 1), hi = 1 - 0.06 * Math.max(0, nRight - 1);
    layout.xaxis.domain = [lo, hi];
    units.forEach((unit, i) => {
      const ax = { title: { text: unit || "(no unit)" }, fixedrange: true, autorange: true };
      if (i > 0) {
        const k = Math.floor(i / 2);
        Object.assign(ax, { overlaying: "y", anchor: "free",
          side: i % 2 ? "right" : "left", position: i % 2 ? hi + 0.06 * k : lo - 0.06 * k });
      }
      layout[i === 0 ? "yaxis" : "yaxis" + (i + 1)] = ax;
    });
    const chart = document.getElementById("chart");
    await Plotly.react(chart, traces, layout, { scrollZoom: true, displaylogo: false, responsive: true });
    if (!chart.xcBound) {
      chart.xcBound = true;
      chart.on("plotly_relayout", (ev) => this.relayout(ev));
    }
  },

  // A zoom (drag, wheel) or pan: the new x range, drawn again from plot mode.
  relayout(ev) {
    let a = ev["xaxis.range[0]"], b = ev["xaxis.range[1]"];
    if (a === undefined && Array.isArray(ev["xaxis.range"])) [a, b] = ev["xaxis.range"];
    if (a === undefined && !ev["xaxis.autorange"]) return;
    clearTimeout(this.relayoutTimer);
    this.relayoutTimer = setTimeout(() => {
      if (a === undefined) return this.refresh(); // double-click: back to the range asked for
      const ms = (v) => (typeof v === "number" ? v : Date.parse(String(v).replace(" ", "T").slice(0, 23) + "Z"));
      const from = ms(a), to = ms(b);
      if (Number.isFinite(from) && Number.isFinite(to) && to > from) this.setRange(to - from, to);
    }, 120);
  },

  // The aggregate API over exactly the range the chart shows.
  intervalFor(answer) {
    if (this.interval !== "auto") return this.interval;
    const span = answer.end - answer.start;
    return this.NICE.find((i) => span / i <= this.AUTO_BUCKETS) || this.NICE[this.NICE.length - 1];
  },

  aggregates(answer) {
    return xc.api("aggregate", {
      tags: JSON.stringify(answer.series.map((s) => s.tag)),
      start: String(answer.start),
      end: String(answer.end),
      interval: String(this.intervalFor(answer)),
      aggregates: this.AGGREGATES.join(","),
    });
  },

  // The table's rows and columns: the points drawn, or the aggregates per interval.
  rows() {
    const out = [];
    if (this.tableMode === "agg") {
      for (const s of (this.shownAgg || { series: [] }).series) {
        s.start.forEach((t, k) => out.push([s.tag, t, ...this.AGGREGATES.map((a) => s.values[a][k])]));
      }
      return out;
    }
    for (const s of (this.shown || { series: [] }).series) {
      for (let k = 0; k < s.ts.length; k++) out.push([s.tag, s.ts[k], s.values[k], s.q[k]]);
    }
    return out;
  },

  table() {
    const agg = this.tableMode === "agg";
    const head = agg ? ["Tag", "Interval start (UTC)", "Min", "Max", "Avg", "Count"]
      : ["Tag", "Time (UTC)", "Value", "Quality"];
    const hr = document.querySelector("#points-table thead tr");
    hr.replaceChildren();
    for (const h of head) hr.append(Object.assign(document.createElement("th"), { textContent: h }));
    const rows = this.rows();
    const body = document.querySelector("#points-table tbody");
    body.replaceChildren();
    for (const [tag, ts, ...rest] of rows.slice(0, this.TABLE_ROWS)) {
      const tr = body.insertRow();
      xc.cell(tr, tag);
      xc.cell(tr, xc.iso(ts));
      if (agg) {
        for (const v of rest) xc.cell(tr, v === null ? "" : String(v), "num");
      } else {
        xc.cell(tr, rest[0] === null ? "" : String(rest[0]), "num");
        xc.cell(tr, String(rest[1]), "q-" + xc.quality(rest[1]));
      }
    }
    const n = rows.length;
    const what = agg ? n + " intervals of " + (this.shownAgg ? this.shownAgg.interval / 1e6 : "?") + " s"
      : n + " points drawn";
    document.getElementById("table-note").textContent = n > this.TABLE_ROWS
      ? what + "; the table lists the first " + this.TABLE_ROWS + ", the CSV all of them"
      : what;
  },

  csvText() {
    const quote = (s) => (/[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s);
    const agg = this.tableMode === "agg";
    const lines = [agg ? "tag,interval_start_utc,interval_start_us,interval_us," + this.AGGREGATES.join(",")
      : "tag,time_utc,timestamp_us,value,quality"];
    const interval = agg && this.shownAgg ? this.shownAgg.interval : 0;
    for (const [tag, ts, ...rest] of this.rows()) {
      const cols = rest.map((v) => (v === null ? "" : v));
      lines.push([quote(tag), xc.iso(ts) + "Z", ts, ...(agg ? [interval] : []), ...cols].join(","));
    }
    return lines.join("\r\n") + "\r\n";
  },

  download() {
    if (!this.shown) return;
    const blob = new Blob([this.csvText()], { type: "text/csv" });
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = "xtsdb-trend.csv";
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  },
};
