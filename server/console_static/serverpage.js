// The server page: what the stats op shows, refreshed every 2 s while it is open.
"use strict";

xc.server = {
  timer: null,
  prev: null, // {t, written}: the ingest rate is the change of points_written

  show() {
    this.refresh();
  },

  hide() {
    clearTimeout(this.timer);
    this.timer = null;
    this.prev = null;
  },

  async refresh() {
    clearTimeout(this.timer);
    try {
      const stats = await xc.api("stats", {});
      xc.say("");
      this.render(stats);
    } catch (err) {
      xc.fail(err);
    }
    if (xc.view === "server") this.timer = setTimeout(() => this.refresh(), 2000);
  },

  render(stats) {
    const engine = stats.engine || {};
    const now = performance.now();
    const written = engine.points_written || 0;
    let rate = "";
    if (this.prev) {
      const dt = (now - this.prev.t) / 1000;
      rate = Math.max(0, (written - this.prev.written) / dt).toFixed(0) + " /s";
    }
    this.prev = { t: now, written };
    const cards = [
      ["Ingest rate", rate || "…"],
      ["Tags", String(engine.tags ?? "")],
      ["Points in memory", String(engine.memory_points ?? "")],
      ["WAL", xc.bytes(engine.wal_bytes || 0)],
      ["Blocks", String(engine.blocks ?? "")],
      ["Disk (containers)", xc.bytes(engine.container_bytes || 0)],
    ];
    const box = document.getElementById("server-summary");
    box.replaceChildren();
    for (const [label, value] of cards) {
      const card = document.createElement("div");
      card.className = "card";
      const l = document.createElement("div");
      l.textContent = label;
      const v = document.createElement("div");
      v.className = "v";
      v.textContent = value;
      card.append(l, v);
      box.append(card);
    }
    this.table("stats-engine", engine);
    this.table("stats-server", stats.server || {});
  },

  table(id, obj) {
    const body = document.querySelector("#" + id + " tbody");
    body.replaceChildren();
    for (const key of Object.keys(obj).sort()) {
      const tr = body.insertRow();
      const value = obj[key];
      xc.cell(tr, key);
      xc.cell(tr, typeof value === "object" ? JSON.stringify(value) : String(value), "num");
    }
  },
};
