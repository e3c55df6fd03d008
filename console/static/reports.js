// KPI reports: asks /api/reports/kpis for a period, draws the chosen figure per group as SVG lines and lists
// every row; the CSV link asks the same of /api/reports/kpis.csv. No library, nothing from elsewhere.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";
  const COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
  const RATES = new Set(["service_level", "abandonment_rate", "transfer_rate", "fcr_rate", "channel_switch_rate", "csat"]);
  const W = 900;
  const H = 300;
  const PAD = { left: 56, right: 16, top: 28, bottom: 36 };

  const pct = (v) => (v === null || v === undefined ? "–" : Math.round(v * 1000) / 10 + "%");
  const num = (v, digits = 1) => (v === null || v === undefined ? "–" : String(Math.round(v * 10 ** digits) / 10 ** digits));
  const day = (d) => d.toISOString().slice(0, 10);
  // A row without a group: everything (by none), or the contacts with no queue / agent (never queued, not answered).
  const groupName = (group, by) => group ?? (by === "none" ? "all" : "no " + by);

  function el(name, attributes, text) {
    const node = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function query() {
    const to = new Date($("to").value + "T00:00:00Z");
    to.setUTCDate(to.getUTCDate() + 1); // the "to" day is included
    return new URLSearchParams({
      from: $("from").value,
      to: day(to),
      interval: $("interval").value,
      by: $("by").value,
    });
  }

  function label(iso, interval) {
    // The server's local time as written in the offset ISO string: no conversion by this browser.
    return interval === "15m" ? iso.slice(11, 16) : iso.slice(0, 10);
  }

  function drawChart(report, figure) {
    const chart = $("chart");
    chart.replaceChildren();
    const starts = [...new Set(report.rows.map((r) => r.start))];
    const groups = [...new Set(report.rows.map((r) => r.group))];
    const values = report.rows.map((r) => r[figure]).filter((v) => v !== null && v !== undefined);
    const rate = RATES.has(figure);
    let low = figure === "nps" ? Math.min(0, ...values) : 0;
    let high = rate ? 1 : Math.max(1, ...values);
    if (figure === "nps") high = Math.max(high, 10);
    if (high === low) high = low + 1;
    const x = (i) => PAD.left + (starts.length <= 1 ? (W - PAD.left - PAD.right) / 2 : (i * (W - PAD.left - PAD.right)) / (starts.length - 1));
    const y = (v) => H - PAD.bottom - ((v - low) / (high - low)) * (H - PAD.top - PAD.bottom);

    for (let k = 0; k <= 4; k += 1) {
      const v = low + ((high - low) * k) / 4;
      chart.append(el("line", { x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v), stroke: "#e3e7ee" }));
      chart.append(el("text", { x: PAD.left - 6, y: y(v) + 4, "text-anchor": "end", "font-size": 11, fill: "#5d6676" },
        rate ? Math.round(v * 100) + "%" : num(v)));
    }
    const every = Math.max(1, Math.ceil(starts.length / 12));
    starts.forEach((start, i) => {
      if (i % every) return;
      chart.append(el("text", { x: x(i), y: H - PAD.bottom + 16, "text-anchor": "middle", "font-size": 11, fill: "#5d6676" },
        label(start, report.interval)));
    });
    groups.forEach((group, g) => {
      const colour = COLOURS[g % COLOURS.length];
      const points = [];
      starts.forEach((start, i) => {
        const row = report.rows.find((r) => r.start === start && r.group === group);
        const v = row ? row[figure] : null;
        if (v !== null && v !== undefined) points.push([x(i), y(v), v, start]);
      });
      if (points.length > 1) {
        chart.append(el("polyline", {
          points: points.map(([px, py]) => `${px},${py}`).join(" "),
          fill: "none",
          stroke: colour,
          "stroke-width": 2,
          class: "series",
          "data-group": group ?? "",
        }));
      }
      for (const [px, py, v, start] of points) {
        const dot = el("circle", { cx: px, cy: py, r: 3.5, fill: colour, class: "point", "data-group": group ?? "" });
        const name = groupName(group, report.by);
        dot.append(el("title", {}, `${name} · ${label(start, report.interval)}: ${rate ? pct(v) : num(v)}`));
        chart.append(dot);
      }
      chart.append(el("rect", { x: PAD.left + g * 120, y: 8, width: 10, height: 10, fill: colour }));
      chart.append(el("text", { x: PAD.left + g * 120 + 14, y: 17, "font-size": 12, fill: "#1d2430" }, groupName(group, report.by)));
    });
    if (values.length === 0) {
      chart.append(el("text", { x: W / 2, y: H / 2, "text-anchor": "middle", fill: "#5d6676" }, "nothing to show for this figure"));
    }
  }

  function drawTable(report) {
    const body = $("rows").tBodies[0];
    body.replaceChildren();
    for (const r of report.rows) {
      const row = document.createElement("tr");
      const cells = [
        report.interval === "15m" ? r.start.slice(0, 16).replace("T", " ") : r.start.slice(0, 10),
        groupName(r.group, report.by),
        String(r.contacts),
        String(r.offered),
        String(r.answered),
        pct(r.service_level),
        num(r.asa_s),
        num(r.aht_s),
        String(r.abandoned),
        pct(r.transfer_rate),
        pct(r.fcr_rate),
        pct(r.channel_switch_rate),
        pct(r.csat),
        num(r.nps),
        num(r.ces),
      ];
      for (const text of cells) {
        const td = document.createElement("td");
        td.textContent = text;
        row.append(td);
      }
      body.append(row);
    }
    $("zone").textContent = `(times in ${report.timezone})`;
  }

  let last = null;

  async function show() {
    const params = query();
    $("csv").href = "/api/reports/kpis.csv?" + params;
    const response = await fetch("/api/reports/kpis?" + params, { credentials: "same-origin" });
    const data = await response.json().catch(() => null);
    if (!response.ok) {
      $("error").textContent = data ? (data.field ? data.field + ": " : "") + data.reason : "error " + response.status;
      return;
    }
    $("error").textContent = "";
    last = data;
    drawChart(data, $("figure").value);
    drawTable(data);
  }

  async function start() {
    const me = await window.hilo.signedInAs(["supervisor", "admin"]);
    if (!me) {
      $("need-signin").hidden = false;
      return;
    }
    $("who").hidden = false;
    $("who-name").textContent = `${me.username} (${me.role})`;
    $("reports").hidden = false;
    const today = new Date();
    const weekAgo = new Date(today.getTime() - 6 * 86400000);
    $("from").value = day(weekAgo);
    $("to").value = day(today);
    await show();
  }

  $("query").addEventListener("submit", (event) => {
    event.preventDefault();
    show();
  });
  $("figure").addEventListener("change", () => {
    if (last) drawChart(last, $("figure").value);
  });

  start();
})();
