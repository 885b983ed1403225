// The web page's behaviour: send the chosen image to POST /v1/predict and draw the answer over it.
// Plain browser JavaScript, no build step; the API is the same origin that served this page.
"use strict";

(function () {
  const KEY_STORE = "parking-ml.api-key";
  const SVG_NS = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);

  const form = $("predict-form");
  const fileInput = $("file");
  const dropZone = $("drop-zone");
  const fileName = $("file-name");
  const gsdInput = $("gsd");
  const keyInput = $("api-key");
  const submit = $("submit");
  const results = $("results");
  const statusLine = $("status");
  const errorBox = $("error");
  const output = $("output");
  const picture = $("picture");
  const overlay = $("overlay");
  const overlayTitle = $("overlay-title");
  const tooltip = $("tooltip");
  const stage = $("stage");
  const stageNote = $("stage-note");

  let chosen = null; // {file, url, displayable}

  // --- API key: this tab's session only --------------------------------------------------------
  function readKey() {
    try { return sessionStorage.getItem(KEY_STORE) || ""; } catch (e) { return ""; }
  }
  function storeKey(value) {
    try {
      if (value) sessionStorage.setItem(KEY_STORE, value); else sessionStorage.removeItem(KEY_STORE);
    } catch (e) { /* storage off (private mode): the key still goes with this page's requests */ }
  }
  keyInput.value = readKey();
  keyInput.addEventListener("input", () => storeKey(keyInput.value.trim()));

  // --- choosing a file: picker or drop ---------------------------------------------------------
  function canDisplay(url) {
    // browsers show PNG and JPEG but not TIFF: find out by decoding, not by the file's name
    return new Promise((resolve) => {
      const probe = new Image();
      probe.onload = () => resolve(probe.naturalWidth > 0);
      probe.onerror = () => resolve(false);
      probe.src = url;
    });
  }

  async function choose(file) {
    if (chosen) URL.revokeObjectURL(chosen.url);
    chosen = null;
    submit.disabled = true;
    if (!file) { fileName.textContent = ""; return; }
    const url = URL.createObjectURL(file);
    chosen = { file, url, displayable: await canDisplay(url) };
    fileName.textContent = `${file.name} (${formatBytes(file.size)})`;
    submit.disabled = false;
    say(`Ready: ${file.name}. Press “Find spaces”.`);
  }

  fileInput.addEventListener("change", () => choose(fileInput.files[0] || null));
  for (const type of ["dragenter", "dragover"]) {
    dropZone.addEventListener(type, (event) => {
      event.preventDefault();
      dropZone.classList.add("dragging");
    });
  }
  for (const type of ["dragleave", "drop"]) {
    dropZone.addEventListener(type, () => dropZone.classList.remove("dragging"));
  }
  dropZone.addEventListener("drop", (event) => {
    event.preventDefault();
    const files = event.dataTransfer && event.dataTransfer.files;
    if (!files || !files.length) return;
    try { fileInput.files = files; } catch (e) { /* older browsers: keep our own reference */ }
    choose(files[0]);
  });

  // --- asking the API --------------------------------------------------------------------------
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!chosen) { fileInput.focus(); return; }
    const body = new FormData();
    body.append("file", chosen.file, chosen.file.name);
    const params = new URLSearchParams();
    const gsd = gsdInput.value.trim();
    if (gsd) params.set("gsd", gsd);
    const headers = {};
    const key = keyInput.value.trim();
    if (key) headers["X-API-Key"] = key;

    submit.disabled = true;
    results.setAttribute("aria-busy", "true");
    hideError();
    say(`Finding spaces in ${chosen.file.name}…`);
    const current = chosen;
    try {
      const query = params.toString();
      const response = await fetch("/v1/predict" + (query ? `?${query}` : ""), { method: "POST", body, headers });
      const answer = await readJson(response);
      if (!response.ok) {
        showApiError(response, answer);
        return;
      }
      render(answer, current);
    } catch (err) {
      showError(`Could not reach the API: ${err.message}`, null);
    } finally {
      submit.disabled = !chosen;
      results.removeAttribute("aria-busy");
    }
  });

  async function readJson(response) {
    try { return await response.json(); } catch (e) { return null; }
  }

  function showApiError(response, answer) {
    const error = answer && answer.error;
    if (error && error.message) {
      showError(error.message, `${error.code || "error"} · HTTP ${response.status}`);
      if (response.status === 401) keyInput.focus();
    } else {
      showError(`The server answered HTTP ${response.status} ${response.statusText} without an error message.`, null);
    }
  }

  function showError(message, detail) {
    output.hidden = true;
    errorBox.replaceChildren();
    const text = document.createElement("p");
    text.className = "error-message";
    text.textContent = message;
    errorBox.append(text);
    if (detail) {
      const small = document.createElement("p");
      small.className = "error-code";
      small.textContent = detail;
      errorBox.append(small);
    }
    errorBox.hidden = false;
    say("The request failed.");
  }

  function hideError() {
    errorBox.hidden = true;
    errorBox.replaceChildren();
  }

  function say(text) {
    statusLine.textContent = text;
  }

  // --- drawing the answer ----------------------------------------------------------------------
  function render(answer, source) {
    const width = answer.width;
    const height = answer.height;
    $("free-count").textContent = String(answer.free_spaces);
    $("occupied-count").textContent = String(answer.occupied_spaces);
    $("occupancy").textContent = answer.occupancy_rate == null ? "–" : formatPercent(answer.occupancy_rate);

    stage.style.aspectRatio = `${width} / ${height}`;
    overlay.setAttribute("viewBox", `0 0 ${width} ${height}`);
    overlay.setAttribute("preserveAspectRatio", "none");
    overlay.replaceChildren(overlayTitle);
    overlayTitle.textContent =
      `${answer.free_spaces} free and ${answer.occupied_spaces} occupied spaces drawn over the image`;
    if (source.displayable) {
      picture.src = source.url;
      picture.alt = `The uploaded image ${source.file.name}`;
      picture.hidden = false;
      stage.classList.remove("blank");
      stageNote.textContent = `${source.file.name}, ${width} × ${height} px`;
    } else {
      // a GeoTIFF: browsers cannot show it, so the spaces go on a blank canvas of the image's size
      picture.hidden = true;
      picture.removeAttribute("src");
      stage.classList.add("blank");
      stageNote.textContent = `This browser cannot display ${source.file.name}; the spaces are drawn on a blank ` +
        `canvas of its size (${width} × ${height} px).`;
    }
    const rows = [];
    for (const space of answer.spaces) {
      overlay.append(drawSpace(space));
      rows.push(spaceRow(space));
    }
    $("space-rows").replaceChildren(...rows);
    renderFacts(answer);
    output.hidden = false;
    const rate = answer.occupancy_rate == null ? "no spaces found" : `occupancy ${formatPercent(answer.occupancy_rate)}`;
    say(`Found ${answer.free_spaces} free and ${answer.occupied_spaces} occupied spaces (${rate}).`);
    // one column (a phone): the result is below the form, bring it into view
    if (window.matchMedia("(max-width: 899px)").matches && results.getBoundingClientRect().top > window.innerHeight / 2) {
      results.scrollIntoView({ block: "start" });
    }
  }

  function describe(space) {
    return `${space.status === "free" ? "Free" : "Occupied"} space #${space.id}: ` +
      `confidence ${formatPercent(space.confidence)}, ${space.area_px} px`;
  }

  function drawSpace(space) {
    const polygon = document.createElementNS(SVG_NS, "polygon");
    polygon.setAttribute("points", space.polygon.map((p) => `${p[0]},${p[1]}`).join(" "));
    polygon.setAttribute("class", `space ${space.status}`);
    polygon.dataset.id = String(space.id);
    polygon.dataset.status = space.status;
    polygon.dataset.confidence = String(space.confidence);
    polygon.dataset.area = String(space.area_px);
    const title = document.createElementNS(SVG_NS, "title");
    title.textContent = describe(space);
    polygon.append(title);
    return polygon;
  }

  function spaceRow(space) {
    const row = document.createElement("tr");
    row.dataset.id = String(space.id);
    for (const value of [space.id, space.status, formatPercent(space.confidence), space.area_px]) {
      const cell = document.createElement("td");
      cell.textContent = String(value);
      row.append(cell);
    }
    row.addEventListener("mouseenter", () => highlight(space.id, true));
    row.addEventListener("mouseleave", () => highlight(space.id, false));
    return row;
  }

  function highlight(id, on) {
    const polygon = overlay.querySelector(`polygon[data-id="${id}"]`);
    if (polygon) polygon.classList.toggle("active", on);
  }

  function renderFacts(answer) {
    const facts = [["Model", `${answer.model.name} v${answer.model.version}`], ["Image", `${answer.width} × ${answer.height} px`]];
    if (answer.gsd != null) {
      facts.push(["Resolution", `${Number(answer.gsd).toFixed(3)} m/px` + (answer.gsd_source ? ` (${answer.gsd_source})` : "")]);
    }
    if (answer.quality && typeof answer.quality === "object") {
      const parts = Object.entries(answer.quality).filter(([, v]) => v != null)
        .map(([name, v]) => `${name.replace(/_/g, " ")} ${typeof v === "number" ? Number(v.toPrecision(3)) : v}`);
      if (parts.length) facts.push(["Quality", parts.join(", ")]);
    }
    const t = answer.timings_ms || {};
    if (t.total_ms != null) facts.push(["Time", `${formatMs(t.total_ms)} in all`]);
    const stages = Object.entries(t).filter(([name]) => name !== "total_ms")
      .map(([name, ms]) => `${name.replace(/_ms$/, "")} ${formatMs(ms)}`);
    if (stages.length) facts.push(["Stages", stages.join(", ")]);
    facts.push(["Request id", answer.request_id]);
    const items = [];
    for (const [term, value] of facts) {
      const wrap = document.createElement("div");
      const dt = document.createElement("dt");
      const dd = document.createElement("dd");
      dt.textContent = term;
      dd.textContent = value;
      wrap.append(dt, dd);
      items.push(wrap);
    }
    $("facts").replaceChildren(...items);
  }

  // hover (or tap) a space: its confidence next to the pointer
  function showTip(event) {
    const target = event.target;
    if (!(target instanceof SVGPolygonElement)) { tooltip.hidden = true; return; }
    const box = stage.getBoundingClientRect();
    tooltip.textContent = describe({
      id: target.dataset.id,
      status: target.dataset.status,
      confidence: Number(target.dataset.confidence),
      area_px: target.dataset.area,
    });
    tooltip.hidden = false;
    const x = Math.min(event.clientX - box.left + 12, box.width - tooltip.offsetWidth - 4);
    const y = Math.max(event.clientY - box.top - tooltip.offsetHeight - 8, 4);
    tooltip.style.left = `${Math.max(4, x)}px`;
    tooltip.style.top = `${y}px`;
  }
  overlay.addEventListener("pointermove", showTip);
  overlay.addEventListener("pointerdown", showTip);
  overlay.addEventListener("pointerleave", () => { tooltip.hidden = true; });

  function formatPercent(x) { return `${(x * 100).toFixed(1)}%`; }
  function formatMs(ms) { return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${Math.round(ms)} ms`; }
  function formatBytes(n) {
    if (n < 1024) return `${n} B`;
    if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} KiB`;
    return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  }
})();
