// The operator's page: fetches the dashboard's JSON every few seconds and draws it.
// Plain JavaScript, no framework, no build step. Text from the server is only ever set
// as textContent, never as HTML.
(function () {
  "use strict";

  const root = document.getElementById("dashboard");
  const config = root.dataset;
  const canAct = config.canAct === "true";
  const refreshMs = Number(config.refreshSeconds) * 1000;
  const selected = new Set();
  let lastData = null;
  let timer = null;

  const $ = (id) => document.getElementById(id);

  // Against the origin, not the page's address: opened as http://user:token@host/...,
  // a relative URL would carry the credentials too, and fetch() refuses those. The
  // browser still signs the request in with what the address gave it.
  function sameOrigin(path) {
    return new URL(path, window.location.origin).href;
  }

  function urlFor(template, transactionId) {
    return sameOrigin(template.replace(config.idPlaceholder, encodeURIComponent(transactionId)));
  }

  function el(tag, attributes, text) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, value);
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
    if (seconds < 60) return `${seconds.toFixed(1)} s`;
    if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
    const hours = Math.floor(seconds / 3600);
    return `${hours} h ${Math.floor((seconds % 3600) / 60)} min`;
  }

  // --- fetching ----------------------------------------------------------------------

  async function refresh() {
    clearTimeout(timer);
    try {
      const response = await fetch(sameOrigin(config.dataUrl), { headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error(`the server answered ${response.status}`);
      lastData = await response.json();
      render(lastData);
      $("freshness").classList.remove("stale");
    } catch (error) {
      const when = lastData ? `still showing data from ${lastData.generated_at}` : "no data yet";
      $("freshness").textContent = `Refresh failed (${error.message}); ${when}.`;
      $("freshness").classList.add("stale");
    }
    timer = setTimeout(refresh, refreshMs);
  }

  function render(data) {
    $("freshness").textContent =
      `Data from ${data.generated_at} · refreshes every ${refreshMs / 1000} s`;
    $("freshness").dataset.generatedAt = data.generated_at;
    for (const [status, count] of Object.entries(data.counts)) {
      $(`count-${status}`).textContent = count.toLocaleString("en");
    }
    if (data.processed_estimated) {
      $("count-PROCESSED").textContent = `≈ ${data.counts.PROCESSED.toLocaleString("en")}`;
      $("count-PROCESSED").title = "Estimated from PostgreSQL's row count of the table";
    }
    const oldest = data.oldest_processing;
    $("oldest-age").textContent = oldest ? duration(oldest.age_seconds) : "none";
    $("oldest-id").textContent = oldest ? oldest.transaction_id : "";
    $("due-now").textContent = data.due_now.toLocaleString("en");
    drawCounts($("chart-counts"), data.last_hour);
    drawLatency($("chart-latency"), data.last_hour);
    renderFailed(data);
  }

  // --- the charts (SVG) ----------------------------------------------------------------

  const SVG = "http://www.w3.org/2000/svg";
  const PAD = { left: 54, right: 8, top: 10, bottom: 22 };

  function svg(tag, attributes, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function axisSeconds(value) {
    if (value === 0) return "0 s";
    if (value < 1) return `${Math.round(value * 1000)} ms`;
    return value < 600 ? `${+value.toFixed(1)} s` : `${+(value / 60).toFixed(1)} min`;
  }

  // 2026-11-27T17:48:52.996894Z -> 2026-11-27 17:48:52Z: a table cell needs no microseconds.
  function shortTime(iso) {
    return iso ? iso.replace("T", " ").replace(/\.\d+Z$/, "Z") : "–";
  }

  function niceMax(value) {
    if (value <= 0) return 1;
    const power = 10 ** Math.floor(Math.log10(value));
    for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= value) return step * power;
    return 10 * power;
  }

  function frame(node, minutes, maxValue, formatValue) {
    node.replaceChildren();
    // As wide as it is drawn, so that its text stays legible on a phone.
    const width = Math.max(300, Math.round(node.getBoundingClientRect().width) || 720);
    const height = Number(node.dataset.height);
    node.setAttribute("viewBox", `0 0 ${width} ${height}`);
    const plotWidth = width - PAD.left - PAD.right;
    const plotHeight = height - PAD.top - PAD.bottom;
    const x = (i) => PAD.left + (plotWidth * i) / Math.max(minutes.length - 1, 1);
    const y = (v) => PAD.top + plotHeight - (plotHeight * v) / maxValue;
    for (const fraction of [0, 0.5, 1]) {
      const value = maxValue * fraction;
      node.append(svg("line", { x1: PAD.left, x2: width - PAD.right, y1: y(value), y2: y(value),
        class: "grid" }));
      node.append(svg("text", { x: PAD.left - 6, y: y(value) + 4, class: "axis",
        "text-anchor": "end" }, formatValue(value)));
    }
    for (let i = 0; i < minutes.length; i += 15) {
      const label = minutes[i].minute.slice(11, 16);
      node.append(svg("text", { x: x(i), y: height - 6, class: "axis",
        "text-anchor": i === 0 ? "start" : "middle" }, label));
    }
    node.append(svg("text", { x: width - PAD.right, y: height - 6, class: "axis",
      "text-anchor": "end" }, "now"));
    return { x, y, plotHeight, width, height };
  }

  // One polyline per run of minutes that have a value (a gap where there is none).
  function line(node, minutes, key, className, scale) {
    let points = [];
    const flush = () => {
      if (points.length === 1) {
        const [px, py] = points[0].split(",");
        node.append(svg("circle", { cx: px, cy: py, r: 2.5, class: `dot ${className}` }));
      } else if (points.length > 1) {
        node.append(svg("polyline", { points: points.join(" "), class: `series ${className}` }));
      }
      points = [];
    };
    minutes.forEach((minute, i) => {
      const value = minute[key];
      if (value === null || value === undefined) return flush();
      points.push(`${scale.x(i).toFixed(1)},${scale.y(value).toFixed(1)}`);
    });
    flush();
  }

  // Hovering (or tapping) a minute shows its numbers.
  function hoverTargets(node, minutes, scale, describe) {
    const step = (scale.x(1) - scale.x(0)) || 1;
    minutes.forEach((minute, i) => {
      const target = svg("rect", { x: scale.x(i) - step / 2, y: PAD.top, width: step,
        height: scale.plotHeight, class: "hover" });
      target.append(svg("title", {}, describe(minute)));
      node.append(target);
    });
  }

  function drawCounts(node, minutes) {
    const highest = Math.max(...minutes.map((m) => Math.max(m.received, m.processed, m.failed)));
    // At least 0, 1, 2 on the axis: whole transactions, however quiet the hour.
    const scale = frame(node, minutes, niceMax(Math.max(highest, 2)), (v) => String(v));
    line(node, minutes, "received", "s-received", scale);
    line(node, minutes, "processed", "s-processed", scale);
    line(node, minutes, "failed", "s-failed", scale);
    hoverTargets(node, minutes, scale, (m) =>
      `${m.minute}: ${m.received} received, ${m.processed} processed, ${m.failed} failed`);
  }

  function drawLatency(node, minutes) {
    const highest = Math.max(0, ...minutes.map((m) => m.p99_seconds || 0));
    const scale = frame(node, minutes, niceMax(highest), axisSeconds);
    if (minutes.every((m) => m.p50_seconds === null)) {
      node.append(svg("text", { x: scale.width / 2, y: scale.y(0.75) + 4, class: "axis",
        "text-anchor": "middle" }, "Nothing was processed in the last hour"));
    }
    line(node, minutes, "p50_seconds", "s-p50", scale);
    line(node, minutes, "p99_seconds", "s-p99", scale);
    hoverTargets(node, minutes, scale, (m) => m.p50_seconds === null
      ? `${m.minute}: nothing processed`
      : `${m.minute}: median ${duration(m.p50_seconds)}, p99 ${duration(m.p99_seconds)}`);
  }

  // --- failed transactions and re-drive ------------------------------------------------

  function renderFailed(data) {
    const rows = $("failed-rows");
    const shown = new Set(data.failed.map((t) => t.transaction_id));
    for (const id of [...selected]) if (!shown.has(id)) selected.delete(id);
    rows.replaceChildren();
    for (const transaction of data.failed) rows.append(failedRow(transaction));
    const total = data.counts.FAILED;
    $("failed-summary").textContent = total > data.failed.length
      ? `(newest ${data.failed.length} of ${total.toLocaleString("en")})`
      : `(${total})`;
    $("failed-empty").hidden = data.failed.length > 0;
    $("failed-table").hidden = data.failed.length === 0;
    updateSelection();
  }

  function failedRow(transaction) {
    const id = transaction.transaction_id;
    const row = el("tr", { "data-transaction-id": id });
    if (canAct) {
      const pick = el("input", { type: "checkbox", "aria-label": `Select ${id}` });
      pick.checked = selected.has(id);
      pick.addEventListener("change", () => {
        if (pick.checked) selected.add(id); else selected.delete(id);
        updateSelection();
      });
      const cell = el("td", { class: "pick" });
      cell.append(pick);
      row.append(cell);
    }
    const idCell = el("td", { class: "id", "data-label": "Transaction" });
    const link = el("a", { href: "#find-title" }, id);
    link.addEventListener("click", () => find(id));
    idCell.append(link);
    row.append(idCell);
    row.append(el("td", { class: "amount", "data-label": "Amount" },
      `${transaction.amount} ${transaction.currency}`));
    row.append(el("td", { class: "time", "data-label": "Failed at" }, shortTime(transaction.failed_at)));
    row.append(el("td", { class: "attempts", "data-label": "Attempts" }, transaction.attempts));
    row.append(el("td", { class: "error", "data-label": "Last error" },
      transaction.last_error || "(none recorded)"));
    if (canAct) {
      const button = el("button", { type: "button", class: "redrive" }, "Re-drive");
      button.addEventListener("click", () => redrive([id]));
      const cell = el("td", { class: "act" });
      cell.append(button);
      row.append(cell);
    }
    return row;
  }

  function updateSelection() {
    if (!canAct) return;
    const button = $("redrive-selected");
    button.disabled = selected.size === 0;
    button.textContent = selected.size ? `Re-drive selected (${selected.size})` : "Re-drive selected";
    const all = $("select-all");
    const boxes = $("failed-rows").querySelectorAll("input[type=checkbox]");
    all.checked = boxes.length > 0 && selected.size === boxes.length;
  }

  // Calls the API's own re-drive endpoint, once per transaction. The browser sends the
  // Basic credentials it was given for this page; the header shows the request comes
  // from a script on this page, not from a form another site posted.
  async function redrive(ids) {
    const status = $("action-status");
    status.textContent = `Re-driving ${ids.length}…`;
    const refused = [];
    let moved = 0;
    for (const id of ids) {
      try {
        const response = await fetch(urlFor(config.retryUrl, id), {
          method: "POST",
          headers: { [config.actionHeader]: "dashboard", Accept: "application/json" },
        });
        if (response.status === 202) {
          moved += 1;
          selected.delete(id);
        } else {
          const problem = await response.json().catch(() => ({}));
          refused.push(`${id}: ${response.status} ${problem.detail || problem.title || ""}`);
        }
      } catch (error) {
        refused.push(`${id}: ${error.message}`);
      }
    }
    status.textContent = `Re-driven ${moved} of ${ids.length}.` +
      (refused.length ? ` Refused: ${refused.join("; ")}` : "");
    status.classList.toggle("error-text", refused.length > 0);
    await refresh();
  }

  // --- find by id ------------------------------------------------------------------------

  async function find(id) {
    const result = $("find-result");
    $("find-id").value = id;
    result.replaceChildren(el("p", { class: "muted" }, "Looking…"));
    try {
      const response = await fetch(urlFor(config.findUrl, id), {
        headers: { Accept: "application/json" },
      });
      const body = await response.json();
      if (!response.ok) {
        result.replaceChildren(el("p", { class: "error-text" }, body.detail || response.status));
        return;
      }
      const list = el("dl", { class: "record", "data-transaction-id": body.transaction_id });
      for (const [name, value] of Object.entries(body)) {
        list.append(el("dt", {}, name));
        list.append(el("dd", { "data-field": name, class: name === "status" ? `status-${value}` : "" },
          value === null ? "–" : value));
      }
      result.replaceChildren(list);
    } catch (error) {
      result.replaceChildren(el("p", { class: "error-text" }, `Lookup failed: ${error.message}`));
    }
  }

  $("find-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const id = $("find-id").value.trim();
    if (id) find(id);
  });

  if (canAct) {
    $("redrive-selected").addEventListener("click", () => redrive([...selected]));
    $("select-all").addEventListener("change", (event) => {
      for (const box of $("failed-rows").querySelectorAll("tr")) {
        const id = box.dataset.transactionId;
        if (event.target.checked) selected.add(id); else selected.delete(id);
      }
      if (lastData) renderFailed(lastData);
    });
  }

  let resizing = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizing);
    resizing = setTimeout(() => lastData && render(lastData), 150);
  });

  refresh();
})();
