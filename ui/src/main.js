// The live traffic view of simiankube: Vizceral's three levels (global, region, service) drawn with
// cytoscape.js, fed by server-sent events from /api/events (the graph once, then a frame a second).
// The tables beside the picture carry the same figures for screen readers and tests.
import cytoscape from "cytoscape";

const $ = (selector) => document.querySelector(selector);
const state = { graph: null, frame: null, level: { kind: "global" }, frames: 0, lastFrameAt: 0, drawn: "" };
const UPDATE_MS = []; // how long applying each frame took (the benchmark reads it)
const BULK_EDGES = 400;
const STORES = new Set(["store", "cache", "volume", "priamCassandra", "riak"]); // above this many edges the picture drops arrows and edge labels

// -- the picture --------------------------------------------------------------------------------

const cy = cytoscape({
  container: $("#graph"),
  minZoom: 0.05,
  maxZoom: 3,
  wheelSensitivity: 0.3,
  textureOnViewport: true,
  hideEdgesOnViewport: false,
  style: [
    { selector: "node", style: {
      "background-color": "#1f3a5c", "border-width": 2, "border-color": "#36c5d6",
      label: "data(label)", color: "#d7e1ef", "font-size": 13, "text-wrap": "wrap",
      "text-valign": "bottom", "text-margin-y": 6, "text-outline-color": "#0d1420", "text-outline-width": 2,
      "min-zoomed-font-size": 7,
      width: "data(size)", height: "data(size)",
    } },
    { selector: "node.source", style: { shape: "round-rectangle", "background-color": "#24456b" } },
    { selector: "node.store", style: { shape: "barrel" } },
    { selector: "node.victim", style: { "border-style": "double", "border-width": 5 } },
    { selector: "node.down", style: { "border-color": "#ff5d6c", "background-color": "#5c1f2a" } },
    { selector: "node.errors", style: { "border-color": "#ff8a3d" } },
    { selector: "node:selected", style: { "overlay-color": "#36c5d6", "overlay-opacity": 0.15 } },
    { selector: "node.zone", style: {
      shape: "round-rectangle", "background-color": "#121c2b", "background-opacity": 1, "border-width": 1,
      "border-color": "#2c3e5a", label: "data(label)", "text-valign": "top", "text-margin-y": -4,
      color: "#8394ad", "font-size": 11,
    } },
    { selector: "node.focus", style: {
      shape: "round-rectangle", "background-color": "#0f1826", "border-color": "#36c5d6", "border-width": 2,
      "text-valign": "top", "text-margin-y": -6, "font-size": 14, "font-weight": 600,
    } },
    { selector: "node.instance", style: {
      width: 18, height: 18, "background-color": "#3ddc84", "border-width": 0, "font-size": 9, color: "#8394ad",
    } },
    { selector: "node.instance.down", style: { "background-color": "#ff5d6c" } },
    { selector: "edge", style: {
      width: "data(width)", "line-color": "#36c5d6", "target-arrow-color": "#36c5d6", "target-arrow-shape": "triangle",
      "arrow-scale": 0.9, "curve-style": "bezier", opacity: 0.85, label: "data(label)", "font-size": 10,
      color: "#b8c7dc", "text-background-color": "#0d1420", "text-background-opacity": 0.85,
      "text-background-padding": 2, "text-rotation": "autorotate", "min-zoomed-font-size": 7,
    } },
    { selector: "edge.idle", style: { "line-color": "#2f4f6a", "target-arrow-color": "#2f4f6a", opacity: 0.7 } },
    { selector: "edge.errors", style: { "line-color": "#ff8a3d", "target-arrow-color": "#ff8a3d" } },
    { selector: "edge.denied", style: { "line-color": "#ff5d6c", "target-arrow-color": "#ff5d6c", "line-style": "dashed" } },
    { selector: "edge.undeclared", style: {
      "line-color": "#ffb020", "target-arrow-color": "#ffb020", "line-style": "dashed" } },
    // A big graph: straight edges without arrows (direction reads left to right) and no edge labels
    // (the table has the figures); cytoscape draws these several times faster.
    { selector: "edge.bulk", style: { "curve-style": "haystack", "haystack-radius": 0, label: "", opacity: 0.3 } },
  ],
});
cy.on("tap", "node", (event) => {
  const service = event.target.data("service");
  if (service && !(state.level.kind === "service" && state.level.service === service)) go({ kind: "service", service });
});

// Columns by depth from the traffic sources, as Vizceral and simianviz lay traffic left to right.
function depths(services, edges) {
  const names = new Set(services.map((s) => s.name));
  const inner = edges.filter((e) => names.has(e.source) && names.has(e.target) && e.source !== e.target);
  const called = new Set(inner.map((e) => e.target));
  // Traffic enters at the sources; in a region without one, at the services nobody there calls.
  // What traffic never reaches (an unused store) goes in the last column, with the leaves.
  const sources = services.filter((s) => s.source).map((s) => s.name);
  const entries = sources.length ? sources : services.filter((s) => !called.has(s.name)).map((s) => s.name);
  const depth = new Map(services.map((s) => [s.name, null]));
  const callees = new Map(services.map((s) => [s.name, []]));
  for (const e of inner) callees.get(e.source).push(e.target);
  for (const name of entries) depth.set(name, 0);
  const queue = [...entries];
  while (queue.length) {
    const name = queue.shift();
    for (const callee of callees.get(name)) {
      if (depth.get(callee) === null) { depth.set(callee, depth.get(name) + 1); queue.push(callee); }
    }
  }
  const deepest = Math.max(0, ...[...depth.values()].filter((d) => d !== null));
  for (const [name, d] of depth) if (d === null) depth.set(name, deepest + 1);
  return depth;
}

function serviceLabel(service, figures) {
  const ready = figures ? `${figures.ready}/${figures.total}` : `${service.instances}`;
  return `${service.name}\n${service.package} · ${ready}`;
}

// Small graphs: one column per depth, roomy. Big ones: each depth wraps into sub-columns of
// `rows` nodes, chosen so that the whole picture is about as wide as the screen is, relative to its height.
const ROOMY = 60;

function placement(services, depth) {
  const columns = new Map();
  for (const s of services) {
    const d = depth.get(s.name);
    if (!columns.has(d)) columns.set(d, []);
    columns.get(d).push(s);
  }
  const roomy = services.length <= ROOMY;
  const [colGap, subGap, rowGap] = roomy ? [230, 0, 110] : [140, 70, 40];
  const aspect = Math.max(1, $("#graph").clientWidth / Math.max(1, $("#graph").clientHeight));
  const rows = roomy ? Infinity : Math.max(4, Math.round(Math.sqrt((services.length * subGap) / (aspect * rowGap))));
  const positions = new Map();
  let x = 0;
  for (const d of [...columns.keys()].sort((a, b) => a - b)) {
    const column = columns.get(d);
    const subColumns = Math.ceil(column.length / Math.min(rows, column.length));
    const perColumn = Math.ceil(column.length / subColumns);
    column.forEach((s, i) => {
      const sub = Math.floor(i / perColumn);
      const row = i % perColumn;
      const stagger = sub % 2 ? rowGap / 2 : 0; // neighbouring sub-columns interleave: fewer edges overlap
      positions.set(s.name, { x: x + sub * subGap, y: (row - (perColumn - 1) / 2) * rowGap + stagger });
    });
    x += (subColumns - 1) * subGap + colGap;
  }
  return positions;
}

function drawServices(services, edges) {
  const positions = placement(services, depths(services, edges));
  const elements = [];
  for (const s of services) {
    const classes = [s.source ? "source" : "", STORES.has(s.package) ? "store" : "",
      s.name === state.graph.victim ? "victim" : ""].filter(Boolean).join(" ");
    elements.push({ group: "nodes", classes, position: positions.get(s.name),
      data: { id: `s:${s.name}`, service: s.name, label: serviceLabel(s), size: 30 + 8 * Math.log2(1 + s.instances) } });
  }
  const names = new Set(services.map((s) => s.name));
  for (const e of edges) {
    if (names.has(e.source) && names.has(e.target)) {
      elements.push({ group: "edges", classes: e.policy === "denied" ? "denied" : "",
        data: { id: `e:${e.source}→${e.target}`, source: `s:${e.source}`, target: `s:${e.target}`, width: 1.5, label: "" } });
    }
  }
  return elements;
}

function drawFocus(name) {
  const g = state.graph;
  const service = state.byName.get(name);
  const callers = g.edges.filter((e) => e.target === name).map((e) => e.source);
  const callees = g.edges.filter((e) => e.source === name).map((e) => e.target);
  const instances = g.instances.filter((i) => i.service === name);
  const zones = [...new Set(instances.map((i) => `${i.region}/${i.zone}`))];
  const elements = [{ group: "nodes", classes: "focus" + (name === g.victim ? " victim" : ""),
    data: { id: `s:${name}`, service: name, label: `${name} (${service.package})`, size: 40 } }];
  // Zones in a grid: one row per region, one column per zone, up to six instances a line in each.
  const regions = [...new Set(instances.map((i) => i.region))];
  const zoneColumn = new Map();
  for (const zone of zones) {
    const region = zone.split("/")[0];
    zoneColumn.set(zone, zones.filter((z) => z.split("/")[0] === region).indexOf(zone));
  }
  const lines = (zone) => Math.ceil(instances.filter((i) => `${i.region}/${i.zone}` === zone).length / 6);
  const rowHeight = 34 * Math.max(...zones.map(lines)) + 80;
  zones.forEach((zone) => {
    elements.push({ group: "nodes", classes: "zone", data: { id: `z:${zone}`, parent: `s:${name}`, label: zone, size: 20 } });
    const x0 = zoneColumn.get(zone) * 270;
    const y0 = regions.indexOf(zone.split("/")[0]) * rowHeight;
    instances.filter((i) => `${i.region}/${i.zone}` === zone).forEach((i, n) => {
      elements.push({ group: "nodes", classes: "instance", position: { x: x0 + (n % 6) * 34, y: y0 + Math.floor(n / 6) * 34 },
        data: { id: `i:${i.name}`, parent: `z:${zone}`, label: i.name.split("-").pop(), size: 18 } });
    });
  });
  const height = regions.length * rowHeight - 80;
  const width = Math.max(...zones.map((z) => zoneColumn.get(z))) * 270 + 170;
  const side = (list, x) => list.forEach((other, n) => {
    const s = state.byName.get(other);
    elements.push({ group: "nodes", classes: s.source ? "source" : "", position: { x, y: (n - (list.length - 1) / 2) * 100 + height / 2 },
      data: { id: `s:${other}@${x}`, service: other, label: serviceLabel(s), size: 30 } });
  });
  const [left, right] = [-300, width + 300];
  side(callers, left);
  side(callees, right);
  for (const e of g.edges) {
    if (e.target === name) elements.push({ group: "edges", classes: e.policy === "denied" ? "denied" : "",
      data: { id: `e:${e.source}→${e.target}`, source: `s:${e.source}@${left}`, target: `s:${name}`, width: 1.5, label: "" } });
    if (e.source === name) elements.push({ group: "edges", classes: e.policy === "denied" ? "denied" : "",
      data: { id: `e:${e.source}→${e.target}`, source: `s:${name}`, target: `s:${e.target}@${right}`, width: 1.5, label: "" } });
  }
  return elements;
}

function visibleServices() {
  const g = state.graph;
  if (state.level.kind === "region") return g.services.filter((s) => s.regions.includes(state.level.region));
  return g.services;
}

function redraw() {
  const key = JSON.stringify(state.level);
  if (state.drawn === key) return;
  state.drawn = key;
  const elements = state.level.kind === "service" ? drawFocus(state.level.service) : drawServices(visibleServices(), state.graph.edges);
  cy.batch(() => { cy.elements().remove(); cy.add(elements); });
  cy.layout({ name: "preset", fit: true, padding: 70 }).run();
  if (cy.zoom() > 1.4) { cy.zoom(1.4); cy.center(); }
  buildTables();
  applyFrame();
}

// -- figures ------------------------------------------------------------------------------------

function scope() {
  const f = state.frame;
  if (!f) return null;
  if (state.level.kind === "region") return f.regions[state.level.region] || f.all;
  return f.all;
}

const fmt = (v, digits = 1) => (v === null || v === undefined ? "–" : v >= 100 ? v.toFixed(0) : v.toFixed(digits));

function edgeLabel(e) {
  if (!e || !e.rps) return "";
  const errors = e.eps ? ` · ${fmt((100 * e.eps) / e.rps)}% err` : "";
  return `${fmt(e.rps)}/s${errors}`;
}

// Only what changed: every data() call makes cytoscape restyle the element.
function setData(element, key, value) {
  if (element.data(key) !== value) element.data(key, value);
}

function toggle(element, name, on) {
  if (element.hasClass(name) !== on) element.toggleClass(name, on);
}

function applyFrame() {
  const s = scope();
  if (!s || !state.graph) return;
  const started = performance.now();
  const down = new Set(Object.entries(state.frame.instances).filter(([, i]) => !i.ready).map(([n]) => n));
  const edgeMap = new Map(s.edges.map((e) => [`${e.source}→${e.target}`, e]));
  const busiest = s.edges.reduce((most, e) => Math.max(most, e.rps), 1);
  const many = cy.edges().length > BULK_EDGES;
  cy.batch(() => {
    cy.nodes().forEach((node) => {
      const name = node.data("service");
      if (node.hasClass("instance")) { toggle(node, "down", down.has(node.id().slice(2))); return; }
      if (!name || node.hasClass("focus")) return;
      const figures = s.services[name];
      setData(node, "label", serviceLabel(state.byName.get(name), figures));
      toggle(node, "down", Boolean(figures && figures.ready < figures.total));
      toggle(node, "errors", Boolean(figures && figures.eps > 0.01 * Math.max(figures.rps, 1)));
    });
    cy.edges().forEach((edge) => {
      const e = edgeMap.get(edge.id().slice(2));
      const rps = e ? e.rps : 0;
      setData(edge, "width", rps ? Math.round(10 * (1.5 + 7 * Math.sqrt(rps / busiest))) / 10 : 1.2);
      setData(edge, "label", edgeLabel(e));
      toggle(edge, "idle", !rps);
      toggle(edge, "errors", Boolean(e && e.eps > 0.01 * e.rps));
      if (many !== edge.hasClass("bulk")) edge.toggleClass("bulk", many);
    });
    // Traffic on a pair nobody declared: draw it, it should never happen.
    for (const e of s.edges) {
      const id = `e:${e.source}→${e.target}`;
      if (!e.declared && e.rps && state.level.kind !== "service" && !cy.getElementById(id).length
          && cy.getElementById(`s:${e.source}`).length && cy.getElementById(`s:${e.target}`).length) {
        cy.add({ group: "edges", classes: "undeclared", data: { id, source: `s:${e.source}`, target: `s:${e.target}`, width: 2, label: edgeLabel(e) } });
      }
    }
  });
  updateTables(s, down);
  updateRegions();
  updateTimeline();
  updateSegmentation();
  UPDATE_MS.push(performance.now() - started);
  if (UPDATE_MS.length > 600) UPDATE_MS.shift();
}

// -- tables -------------------------------------------------------------------------------------

function cell(row, text, field) {
  const td = document.createElement(row.children.length ? "td" : "th");
  if (!row.children.length) td.scope = "row";
  if (field) { td.dataset.field = field; row.cellsByField = { ...row.cellsByField, [field]: td }; }
  if (text instanceof Node) td.append(text); else td.textContent = text;
  row.append(td);
  return td;
}

function link(text, level) {
  const a = document.createElement("a");
  a.href = hashOf(level);
  a.textContent = text;
  return a;
}

function tableEdges() {
  const g = state.graph;
  if (state.level.kind === "service") return g.edges.filter((e) => e.source === state.level.service || e.target === state.level.service);
  const names = new Set(visibleServices().map((s) => s.name));
  return g.edges.filter((e) => names.has(e.source) && names.has(e.target));
}

function buildTables() {
  const services = $("#services tbody");
  services.replaceChildren();
  const shown = state.level.kind === "service"
    ? state.graph.services.filter((s) => s.name === state.level.service || tableEdges().some((e) => e.source === s.name || e.target === s.name))
    : visibleServices();
  for (const s of shown) {
    const row = document.createElement("tr");
    row.dataset.service = s.name;
    if (state.level.kind === "service" && s.name === state.level.service) row.classList.add("focus");
    cell(row, link(s.name, { kind: "service", service: s.name }));
    cell(row, s.package);
    for (const field of ["ready", "rps", "eps", "p50", "p99"]) cell(row, "–", field);
    services.append(row);
  }
  const edges = $("#edges tbody");
  edges.replaceChildren();
  state.edgeRows = new Map();
  for (const e of tableEdges()) {
    const row = edgeRow(e, true, e.policy);
    edges.append(row);
    state.edgeRows.set(row.dataset.edge, row);
  }
  $("#instances-panel").hidden = state.level.kind !== "service";
}

function edgeRow(e, declared, policy) {
  const row = document.createElement("tr");
  row.dataset.edge = `${e.source}→${e.target}`;
  cell(row, e.source);
  cell(row, e.target);
  const p = cell(row, declared ? policy : "undeclared", "policy");
  p.className = declared ? `policy-${policy}` : "undeclared";
  for (const field of ["rps", "eps", "p50", "p99"]) cell(row, "–", field);
  return row;
}

function setCell(row, field, value, text) {
  const td = row.cellsByField[field];
  if (td.textContent === text) return;
  td.textContent = text;
  td.dataset.value = value === null || value === undefined ? "" : String(value);
  td.classList.toggle("zero", !value);
}

function updateTables(s, down) {
  for (const row of $("#services tbody").children) {
    const f = s.services[row.dataset.service];
    if (!f) continue;
    setCell(row, "ready", f.ready, `${f.ready}/${f.total}`);
    row.cellsByField.ready.classList.toggle("zero", false);
    setCell(row, "rps", f.rps, fmt(f.rps));
    setCell(row, "eps", f.eps, fmt(f.eps));
    row.cellsByField.eps.classList.toggle("errs", f.eps > 0);
    setCell(row, "p50", f.p50, fmt(f.p50, 2));
    setCell(row, "p99", f.p99, fmt(f.p99, 2));
    row.classList.toggle("down", f.ready < f.total);
  }
  const body = $("#edges tbody");
  const rows = state.edgeRows;
  for (const e of s.edges) {
    let row = rows.get(`${e.source}→${e.target}`);
    if (!row && !e.declared && e.rps) { row = edgeRow(e, false, ""); body.append(row); rows.set(row.dataset.edge, row); }
    if (!row) continue;
    setCell(row, "rps", e.rps, fmt(e.rps));
    setCell(row, "eps", e.eps, fmt(e.eps));
    row.cellsByField.eps.classList.toggle("errs", e.eps > 0);
    setCell(row, "p50", e.p50, fmt(e.p50, 2));
    setCell(row, "p99", e.p99, fmt(e.p99, 2));
  }
  if (state.level.kind === "service") updateZones(down);
}

function updateZones(down) {
  const instances = state.graph.instances.filter((i) => i.service === state.level.service);
  const zones = new Map();
  for (const i of instances) {
    const key = `${i.region} / ${i.zone}`;
    if (!zones.has(key)) zones.set(key, []);
    zones.get(key).push(i);
  }
  const box = $("#zones");
  box.replaceChildren();
  for (const [zone, members] of zones) {
    const div = document.createElement("div");
    div.className = "zone";
    const h = document.createElement("h3");
    h.textContent = zone;
    const list = document.createElement("ul");
    for (const i of members) {
      const li = document.createElement("li");
      li.dataset.instance = i.name;
      li.dataset.ready = String(!down.has(i.name));
      li.className = down.has(i.name) ? "down" : "";
      const rps = state.frame.instances[i.name]?.rps ?? 0;
      li.innerHTML = '<i class="dot"></i>';
      li.title = i.name;
      li.append(`#${i.name.split("-").pop()} ${down.has(i.name) ? "down" : "ready"} · ${fmt(rps)}/s`);
      list.append(li);
    }
    div.append(h, list);
    box.append(div);
  }
}

// -- regions: Vizceral's global level, as cards over the picture ---------------------------------

function totals(figures) {
  const all = Object.values(figures.services);
  const sum = (key) => all.reduce((n, f) => n + (f[key] || 0), 0);
  return { ready: sum("ready"), total: sum("total"), rps: sum("rps"), eps: sum("eps") };
}

function updateRegions() {
  const box = $("#regions");
  const regions = Object.keys(state.frame.regions);
  if (box.children.length !== regions.length) {
    box.replaceChildren(...regions.map((region) => {
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.dataset.region = region;
      button.onclick = () => go({ kind: "region", region });
      li.append(button);
      return li;
    }));
  }
  for (const button of box.querySelectorAll("button")) {
    const region = button.dataset.region;
    const t = totals(state.frame.regions[region]);
    const errors = t.rps ? ` · ${fmt((100 * t.eps) / t.rps)}% err` : "";
    const html = `<b>${region}</b><span>${t.ready}/${t.total} ready · ${fmt(t.rps)} req/s${errors}</span>`;
    if (button.innerHTML !== html) button.innerHTML = html;
    button.classList.toggle("down", t.ready < t.total);
    const current = state.level.kind === "region" && state.level.region === region;
    if (current) button.setAttribute("aria-current", "page"); else button.removeAttribute("aria-current");
  }
}

// -- segmentation and chaos ---------------------------------------------------------------------

function updateSegmentation() {
  const g = state.graph;
  const denied = g.edges.filter((e) => e.policy === "denied").length;
  const undeclared = scope().edges.filter((e) => !e.declared && e.rps).length;
  const v = state.frame.verification || g.verification;
  const parts = [`<h2>Segmentation</h2><strong>${g.segmentation}</strong>: ${g.edges.length - denied} declared edges allowed by the NetworkPolicies`];
  if (denied) parts.push(`, <span class="bad">${denied} declared edges denied</span>`);
  parts.push(`; every other pair is ${g.segmentation === "allow-all" ? "open" : "denied"}.`);
  parts.push(undeclared ? ` <span class="bad">${undeclared} undeclared pairs carry traffic.</span>` : " No undeclared pair carries traffic.");
  if (v) {
    const verdict = v.enforced === false ? '<span class="bad">not enforced by the network plugin</span>'
      : v.incorrect ? `<span class="bad">${v.incorrect} cells unexpectedly open or blocked</span>` : '<span class="good">every cell as expected</span>';
    parts.push(`<br>Last verify (${v.time}): ${v.correct} correct, ${verdict}.`);
  } else {
    parts.push(`<br>Last verify: none (${g.source}).`);
  }
  const html = parts.join("");
  if ($("#segmentation").innerHTML !== html) $("#segmentation").innerHTML = html;
}

function describe(event) {
  const details = Object.entries(event).filter(([k]) => !["t_s", "at", "event", "instance"].includes(k))
    .map(([k, v]) => `${k.replace(/_/g, " ")} ${v}`).join(", ");
  return `${fmt(event.t_s, 1)} s  ${event.event} ${event.instance || ""}${details ? ` (${details})` : ""}`;
}

// Local runs report kill/ready/recovered; on a cluster the view sees pods deleted and created.
const EVENT_CLASS = { kill: "kill", "pod deleted": "kill", ready: "ready", recovered: "ready", "pod created": "ready" };

function updateTimeline() {
  const events = state.frame.events;
  const list = $("#timeline");
  if (list.children.length !== events.length) {
    list.replaceChildren(...events.map((e) => {
      const li = document.createElement("li");
      li.className = EVENT_CLASS[e.event] || "other";
      li.dataset.event = e.event;
      li.dataset.instance = e.instance || "";
      li.textContent = describe(e);
      return li;
    }));
  }
  const span = Math.max(state.frame.t, ...events.map((e) => e.at), 1); // `at`: the view's clock, as `t`
  const strip = $("#strip");
  strip.replaceChildren(...events.map((e) => {
    const mark = document.createElement("i");
    mark.className = EVENT_CLASS[e.event] || "other";
    mark.style.left = `${(100 * e.at) / span}%`;
    mark.title = describe(e);
    return mark;
  }));
  const now = document.createElement("b");
  now.style.left = `${(100 * state.frame.t) / span}%`;
  strip.append(now);
}

// -- levels and navigation ----------------------------------------------------------------------

function hashOf(level) {
  if (level.kind === "region") return `#/region/${encodeURIComponent(level.region)}`;
  if (level.kind === "service") return `#/service/${encodeURIComponent(level.service)}`;
  return "#/";
}

function levelOf(hash) {
  const [, kind, name] = hash.split("/").map(decodeURIComponent);
  if (kind === "region" && state.graph?.regions.includes(name)) return { kind, region: name };
  if (kind === "service" && state.graph?.services.some((s) => s.name === name)) return { kind, service: name };
  return { kind: "global" };
}

function go(level) { location.hash = hashOf(level); }

function breadcrumb() {
  const nav = $("#breadcrumb");
  const items = [["all regions", { kind: "global" }]];
  for (const region of state.graph.regions.length > 1 ? state.graph.regions : []) items.push([region, { kind: "region", region }]);
  if (state.level.kind === "service") items.push([state.level.service, state.level]);
  nav.replaceChildren(...items.flatMap(([text, level], n) => {
    const button = document.createElement("button");
    button.textContent = text;
    button.dataset.level = hashOf(level);
    if (hashOf(level) === hashOf(state.level)) button.setAttribute("aria-current", "page");
    button.onclick = () => go(level);
    if (!n) return [button];
    const sep = document.createElement("span");
    sep.className = "sep";
    sep.textContent = level.kind === "service" ? "›" : "·";
    return [sep, button];
  }));
}

window.addEventListener("hashchange", () => {
  state.level = levelOf(location.hash);
  breadcrumb();
  redraw();
});

// -- the feed -----------------------------------------------------------------------------------

function connect() {
  const source = new EventSource("/api/events");
  source.addEventListener("graph", (message) => {
    state.graph = JSON.parse(message.data);
    state.byName = new Map(state.graph.services.map((s) => [s.name, s]));
    $("#arch").textContent = state.graph.architecture;
    $("#description").textContent = `${state.graph.description} — ${state.graph.services.length} services, ${state.graph.instances.length} instances · ${state.graph.source}`;
    document.title = `${state.graph.architecture} · simiankube`;
    state.level = levelOf(location.hash);
    state.drawn = "";
    breadcrumb();
    redraw();
  });
  source.addEventListener("frame", (message) => {
    state.frame = JSON.parse(message.data);
    state.frames += 1;
    state.lastFrameAt = Date.now();
    if (state.graph) applyFrame();
    const s = scope();
    const total = s ? Object.values(s.services).filter((f) => f).reduce((sum, f) => sum + (f.rps || 0), 0) : 0;
    $("#status").textContent = `live · t ${fmt(state.frame.t, 0)} s · ${fmt(total)} req/s across services`;
    $("#status").className = "";
  });
  source.onerror = () => { $("#status").textContent = "disconnected, retrying…"; $("#status").className = "stale"; };
}

setInterval(() => {
  if (state.lastFrameAt && Date.now() - state.lastFrameAt > 5000) { $("#status").textContent = "no update for 5 s (run over?)"; $("#status").className = "stale"; }
}, 1000);

// -- traffic in motion: Vizceral's particles, on a canvas over the graph ----------------------------
// Dots run from caller to callee, more of them the busier the edge, red in the share of errors.
// Small graphs only (a thousand busy edges would cost more than they show), and never for users
// who asked for reduced motion.

const particles = document.createElement("canvas");
particles.id = "particles";
particles.setAttribute("aria-hidden", "true");
$("#picture").insertBefore(particles, $("#regions"));
const still = window.matchMedia("(prefers-reduced-motion: reduce)");
const SPEED = 140; // model units per second
const SPACING = 70; // model units between dots at the busiest edge

function drawParticles(now) {
  const box = $("#graph");
  const ratio = window.devicePixelRatio || 1;
  if (particles.width !== box.clientWidth * ratio || particles.height !== box.clientHeight * ratio) {
    particles.width = box.clientWidth * ratio;
    particles.height = box.clientHeight * ratio;
  }
  const context = particles.getContext("2d");
  context.setTransform(1, 0, 0, 1, 0, 0);
  context.clearRect(0, 0, particles.width, particles.height);
  const s = scope();
  if (still.matches || !s || cy.edges().length > BULK_EDGES) return requestAnimationFrame(drawParticles);
  const zoom = cy.zoom();
  const pan = cy.pan();
  context.setTransform(ratio * zoom, 0, 0, ratio * zoom, ratio * pan.x, ratio * pan.y);
  const figures = new Map(s.edges.map((e) => [`${e.source}→${e.target}`, e]));
  const busiest = s.edges.reduce((most, e) => Math.max(most, e.rps), 1);
  const radius = Math.max(1.6, 2.2 / Math.sqrt(zoom));
  for (const edge of cy.edges()) {
    const e = figures.get(edge.id().slice(2));
    if (!e || !e.rps || edge.isLoop()) continue;
    const a = edge.sourceEndpoint();
    const b = edge.targetEndpoint();
    const length = Math.hypot(b.x - a.x, b.y - a.y);
    const gap = SPACING * Math.sqrt(busiest / e.rps);
    const errors = e.eps / e.rps;
    const shift = ((now / 1000) * SPEED) % gap;
    for (let d = shift, n = 0; d < length; d += gap, n += 1) {
      const t = d / length;
      context.fillStyle = (n * 0.618) % 1 < errors ? "#ff5d6c" : "#e8fbff";
      context.beginPath();
      context.arc(a.x + (b.x - a.x) * t, a.y + (b.y - a.y) * t, radius, 0, 2 * Math.PI);
      context.fill();
    }
  }
  requestAnimationFrame(drawParticles);
}
requestAnimationFrame(drawParticles);

window.simiankube = { cy, state, updateMs: UPDATE_MS, applyFrame };
connect();
