// The tag browser: the server filters and pages the catalog as you type (it may hold
// 100,000 tags); the page keeps only the rows shown and the names selected.
"use strict";

xc.tags = {
  PAGE: 50,
  seq: 0, // answers to older keystrokes are dropped
  after: null,
  selected: new Set(),
  timer: null,

  init() {
    const input = document.getElementById("tag-search");
    input.addEventListener("input", () => {
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.search(false), 150);
    });
    document.getElementById("tag-more").addEventListener("click", () => this.search(true));
    document.getElementById("trend-selected").addEventListener("click", () => {
      xc.trend.open([...this.selected]);
    });
  },

  show(params) {
    const input = document.getElementById("tag-search");
    if (params.has("q")) input.value = params.get("q");
    this.search(false);
  },

  async search(more) {
    const text = document.getElementById("tag-search").value;
    const seq = ++this.seq;
    const params = { q: text, limit: this.PAGE };
    if (more && this.after !== null) params.after = this.after;
    let page;
    try {
      page = await xc.api("tags", params);
    } catch (err) {
      if (seq === this.seq) xc.fail(err);
      return;
    }
    if (seq !== this.seq) return;
    xc.say("");
    xc.writeHash("tags", text ? { q: text } : {});
    const body = document.querySelector("#tag-table tbody");
    if (!more) body.replaceChildren();
    for (const tag of page.tags) this.row(body, tag);
    this.after = page.tags.length ? page.tags[page.tags.length - 1].name : null;
    document.getElementById("tag-more").hidden = !page.more;
    const shown = body.rows.length;
    document.getElementById("tag-count").textContent =
      shown + (page.more ? "+" : "") + " tag" + (shown === 1 ? "" : "s");
  },

  row(body, tag) {
    const tr = body.insertRow();
    tr.dataset.name = tag.name;
    const box = document.createElement("input");
    box.type = "checkbox";
    box.checked = this.selected.has(tag.name);
    box.addEventListener("change", () => {
      if (box.checked) this.selected.add(tag.name);
      else this.selected.delete(tag.name);
      document.getElementById("trend-selected").disabled = this.selected.size === 0;
    });
    tr.insertCell().append(box);
    const link = document.createElement("a");
    link.textContent = tag.name;
    link.addEventListener("click", () => xc.trend.open([tag.name]));
    tr.insertCell().append(link);
    tr.cells[1].className = "name";
    xc.cell(tr, tag.unit);
    xc.cell(tr, tag.description);
    const last = tag.last;
    xc.cell(tr, last ? xc.num(last.value) : "", "num");
    xc.cell(tr, last ? xc.age(last.ts) : "", "num");
    xc.cell(tr, last ? xc.quality(last.q) + " (" + last.q + ")" : "", last ? "q-" + xc.quality(last.q) : "");
  },
};
