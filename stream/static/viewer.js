// ftcn-stream viewer: live video (WebRTC via WHEP, or MJPEG) with face boxes drawn for the frame on screen.
// Plain browser JavaScript, no build step, no external resources.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  const urlToken = params.get("token") || params.get("access_token");
  const token = urlToken || localStorage.getItem("ftcnToken") || "";
  if (urlToken) localStorage.setItem("ftcnToken", token);
  const authHeaders = (extra) => Object.assign(token ? { Authorization: `Bearer ${token}` } : {}, extra || {});

  // State shared with tests (read-only for them): what is shown and what was drawn.
  const S = (window.ftcnViewer = {
    config: null, stream: null, mode: null, state: "idle", framesShown: 0, shownPts: null,
    matched: 0, unmatched: 0, lastDraw: null, alert: null, wsMessages: 0, mapping: null,
  });
  const PTS_TOL = 0.002; // s: a box belongs to the shown frame when their PTS agree to 2 ms
  let frames = []; // recent `frame` messages (boxes per analyzed frame), oldest first
  let history = new Map(); // track -> [rolling scores]
  const lastSeen = new Map(); // track -> time it was last in a frame (the list shows current faces only)
  let ws = null, pc = null, mjpegAbort = null, whepLocation = null, gen = 0, mappingTimer = null;

  // ---------------------------------------------------------------- streams
  async function api(path, opts) {
    const r = await fetch(path, Object.assign({ headers: authHeaders() }, opts || {}));
    if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
    return r.json();
  }

  async function refreshStreams() {
    try {
      const cfg = await api("/viewer/config");
      S.config = cfg;
      const picker = $("picker");
      const have = new Set([...picker.options].map((o) => o.value));
      for (const s of cfg.streams) {
        if (!have.has(s.id)) picker.add(new Option(s.id, s.id));
      }
      if (!S.stream && params.get("stream") && cfg.streams.some((s) => s.id === params.get("stream"))) {
        picker.value = params.get("stream");
        select(picker.value);
      }
    } catch (e) {
      console.warn("stream list:", e.message);
    }
  }

  function select(sid) {
    gen += 1;
    stopVideo();
    if (ws) { ws.onclose = null; ws.close(); ws = null; }
    frames = []; history = new Map(); S.alert = null;
    S.stream = sid || null; S.framesShown = 0; S.shownPts = null; S.matched = 0; S.unmatched = 0;
    renderFaces(); renderAlert(); setStatus(sid ? "starting" : "idle");
    if (!sid) return;
    openSocket(sid, gen);
    startVideo(sid, gen);
  }

  // ---------------------------------------------------------------- websocket (overlay events)
  function openSocket(sid, g) {
    const proto = location.protocol === "https:" ? "wss" : "ws";
    const q = token ? `?access_token=${encodeURIComponent(token)}` : "";
    ws = new WebSocket(`${proto}://${location.host}/ws/${encodeURIComponent(sid)}${q}`);
    ws.onmessage = (ev) => { S.wsMessages += 1; onMessage(JSON.parse(ev.data)); };
    ws.onclose = () => {
      if (g !== gen) return;
      setStatus("disconnected");
      setTimeout(() => { if (g === gen) openSocket(sid, g); }, 1000);
    };
  }

  function onMessage(m) {
    const p = m.payload;
    switch (m.type) {
      case "frame":
        frames.push(m);
        for (const f of m.faces) lastSeen.set(f.track, performance.now());
        if (frames.length > 600) frames.splice(0, frames.length - 600);
        if (S.shownPts !== null && Math.abs(m.pts - S.shownPts) <= PTS_TOL) drawOverlay();
        break;
      case "status":
        setStatus(p.state, p.error);
        if (p.state === "live" && S.mode === null && !pc && !mjpegAbort) startVideo(S.stream, gen);
        break;
      case "face_score": {
        const h = history.get(p.track) || [];
        h.push(p.rolling_score);
        const n = (S.config && S.config.sparkline_points) || 30;
        if (h.length > n) h.splice(0, h.length - n);
        history.set(p.track, h);
        S.threshold = p.threshold;
        renderFaces();
        break;
      }
      case "alert":
        S.alert = p.active ? p : null;
        renderAlert();
        break;
      case "stream_score":
        $("score").textContent = p.score === null ? "no face" :
          `stream score ${fmt(p.score)} (${p.faces} face${p.faces === 1 ? "" : "s"})`;
        if (p.alerts_open && p.alerts_open.length === 0 && S.alert) { S.alert = null; renderAlert(); }
        break;
      default:
        break;
    }
  }

  function setStatus(state, error) {
    S.state = state;
    const el = $("status");
    el.dataset.state = state;
    el.textContent = error ? `${state}: ${error}` : state;
  }

  function renderAlert() {
    const el = $("alert");
    if (S.alert) {
      el.hidden = false;
      el.textContent = `ALERT: face ${S.alert.open_tracks.join(", ")} looks manipulated ` +
        `(score ${fmt(S.alert.score)} >= ${fmt(S.alert.on)})`;
    } else {
      el.hidden = true;
    }
  }

  // ---------------------------------------------------------------- scores, colours, sparklines
  function threshold() {
    return S.threshold ?? (S.config ? S.config.threshold : 0.5);
  }
  function fmt(v) {
    if (v === null || v === undefined) return "…";
    return v >= 0.01 ? v.toFixed(3) : v.toPrecision(3);
  }
  function colour(score) {
    if (score === null || score === undefined) return "#9aa0a6";
    const t = threshold();
    if (score >= t) return "#ea4335";
    if (score >= 0.5 * t) return "#fbbc04";
    return "#34a853";
  }
  function sparkline(ctx, values, x, y, w, h, col) {
    if (!values || values.length < 2) return;
    const top = 1.2 * Math.max(threshold(), ...values) || 1;
    ctx.save();
    ctx.fillStyle = "rgba(0,0,0,0.55)";
    ctx.fillRect(x, y, w, h);
    ctx.strokeStyle = "rgba(255,255,255,0.35)"; // threshold line
    const ty = y + h - (threshold() / top) * h;
    ctx.beginPath(); ctx.moveTo(x, ty); ctx.lineTo(x + w, ty); ctx.stroke();
    ctx.strokeStyle = col; ctx.lineWidth = 1.5;
    ctx.beginPath();
    values.forEach((v, i) => {
      const px = x + (i / (values.length - 1)) * w, py = y + h - (v / top) * h;
      i ? ctx.lineTo(px, py) : ctx.moveTo(px, py);
    });
    ctx.stroke();
    ctx.restore();
  }
  function renderFaces() {
    const ul = $("faces");
    ul.textContent = "";
    for (const [track, vals] of history) {
      if (performance.now() - (lastSeen.get(track) || 0) > 5000) continue;
      const li = document.createElement("li");
      const last = vals[vals.length - 1];
      const label = document.createElement("span");
      label.textContent = `face ${track}: ${fmt(last)}`;
      label.style.color = colour(last);
      const c = document.createElement("canvas");
      c.width = 100; c.height = 24;
      sparkline(c.getContext("2d"), vals, 0, 0, 100, 24, colour(last));
      li.append(label, c);
      ul.append(li);
    }
  }

  // ---------------------------------------------------------------- overlay
  function findFrame(pts) {
    for (let i = frames.length - 1; i >= 0; i--) {
      const d = frames[i].pts - pts;
      if (Math.abs(d) <= PTS_TOL) return frames[i];
      if (d < -1) break;
    }
    return null;
  }

  function drawOverlay() {
    const canvas = $("overlay");
    const stage = $("stage");
    const dpr = window.devicePixelRatio || 1;
    const w = Math.round(stage.clientWidth * dpr), h = Math.round(stage.clientHeight * dpr);
    if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, w, h);
    S.onCanvas = null;  // frame index whose boxes the canvas shows right now (null: nothing drawn)
    if (S.shownPts === null) return;
    const fm = findFrame(S.shownPts);
    if (!fm) { S.unmatched += 1; return; }
    S.matched += 1;
    const scale = w / fm.width;
    const boxes = [];
    ctx.font = `${Math.round(13 * dpr)}px system-ui, sans-serif`;
    ctx.textBaseline = "bottom";
    for (const f of fm.faces) {
      const vals = history.get(f.track);
      const score = vals && vals.length ? vals[vals.length - 1] : f.rolling_score;
      const col = colour(score);
      const [x1, y1, x2, y2] = f.box.map((v) => v * scale);
      ctx.lineWidth = Math.max(2, 3 * dpr);
      ctx.strokeStyle = col;
      ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
      const label = `#${f.track} ${fmt(score)}`;
      const tw = ctx.measureText(label).width + 8 * dpr, th = 18 * dpr;
      const ly = Math.max(th, y1);
      ctx.fillStyle = col;
      ctx.fillRect(x1, ly - th, tw, th);
      ctx.fillStyle = "#000";
      ctx.fillText(label, x1 + 4 * dpr, ly - 3 * dpr);
      sparkline(ctx, vals, x1, y2 + 4 * dpr, Math.max(40 * dpr, x2 - x1), 20 * dpr, col);
      boxes.push({ track: f.track, x: x1, y: y1, w: x2 - x1, h: y2 - y1, color: col, label, score });
    }
    S.lastDraw = { pts: fm.pts, frame: fm.frame, boxes, canvas: [w, h] };
    S.onCanvas = fm.frame;
  }

  function shown(pts) {
    S.shownPts = pts;
    S.framesShown += 1;
    drawOverlay();
  }

  // ---------------------------------------------------------------- video: WebRTC (WHEP) or MJPEG
  function stopVideo() {
    if (mappingTimer) { clearTimeout(mappingTimer); mappingTimer = null; }
    if (pc) { pc.close(); pc = null; }
    if (whepLocation) {
      fetch(whepLocation, { method: "DELETE", headers: authHeaders() }).catch(() => {});
      whepLocation = null;
    }
    if (mjpegAbort) { mjpegAbort.abort(); mjpegAbort = null; }
    $("video").hidden = true; $("mjpeg").hidden = true;
    S.mode = null; S.mapping = null;
    $("transport").textContent = "";
  }

  async function startVideo(sid, g) {
    const forced = params.get("mode");
    if (S.config && S.config.webrtc && forced !== "mjpeg" && window.RTCPeerConnection) {
      try {
        await startWebRTC(sid, g);
        return;
      } catch (e) {
        console.warn("WebRTC unavailable, using MJPEG:", e.message);
        stopVideo();
      }
    }
    if (g === gen) startMJPEG(sid, g);
  }

  function waitIce(conn, ms) {
    return new Promise((resolve) => {
      if (conn.iceGatheringState === "complete") return resolve();
      const t = setTimeout(resolve, ms);
      conn.addEventListener("icegatheringstatechange", () => {
        if (conn.iceGatheringState === "complete") { clearTimeout(t); resolve(); }
      });
    });
  }

  async function startWebRTC(sid, g) {
    S.mode = "webrtc";
    $("transport").textContent = "WebRTC";
    pc = new RTCPeerConnection({ iceServers: [] });
    const conn = pc;
    pc.addTransceiver("video", { direction: "recvonly" });
    const video = $("video");
    pc.ontrack = (ev) => { video.srcObject = ev.streams[0] || new MediaStream([ev.track]); };
    await pc.setLocalDescription(await pc.createOffer());
    await waitIce(pc, 2000);
    const r = await fetch(`/whep/${encodeURIComponent(sid)}`, {
      method: "POST", headers: authHeaders({ "Content-Type": "application/sdp" }), body: pc.localDescription.sdp,
    });
    if (r.status !== 201) throw new Error(`WHEP: HTTP ${r.status}`);
    whepLocation = new URL(r.headers.get("Location"), location.href).href;
    await conn.setRemoteDescription({ type: "answer", sdp: await r.text() });
    video.hidden = false;
    pollMapping(g);
    const onFrame = (now, meta) => {
      if (g !== gen || conn !== pc) return;
      const m = S.mapping;
      if (m && m.rtp_origin !== null && meta.rtpTimestamp !== undefined) {
        const ticks = (((meta.rtpTimestamp - m.rtp_origin) % 4294967296) + 4294967296) % 4294967296;
        shown(m.pts0 + ticks / m.clock);
      }
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
    const timeout = ((S.config && S.config.webrtc_timeout_s) || 8) * 1000;
    await new Promise((resolve, reject) => {
      const t0 = performance.now();
      const check = () => {
        if (g !== gen || conn !== pc) return resolve();
        if (video.currentTime > 0 && S.mapping && S.mapping.rtp_origin !== null) return resolve();
        if (conn.connectionState === "failed" || performance.now() - t0 > timeout) {
          return reject(new Error(`no video after ${timeout / 1000} s (${conn.connectionState})`));
        }
        setTimeout(check, 200);
      };
      check();
    });
  }

  async function pollMapping(g) {
    if (g !== gen || !whepLocation) return;
    try {
      const r = await fetch(whepLocation, { headers: authHeaders() });
      if (r.ok) S.mapping = await r.json();
    } catch (e) { /* retried below */ }
    // Re-read now and then: the mapping's pts0 moves when the source reconnects.
    const again = S.mapping && S.mapping.rtp_origin !== null ? 3000 : 250;
    mappingTimer = setTimeout(() => pollMapping(g), again);
  }

  function indexOf(hay, needle, from) {
    outer: for (let i = from; i <= hay.length - needle.length; i++) {
      for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
      return i;
    }
    return -1;
  }

  async function startMJPEG(sid, g) {
    S.mode = "mjpeg";
    $("transport").textContent = "MJPEG";
    const canvas = $("mjpeg");
    canvas.hidden = false;
    const ctl = new AbortController();
    mjpegAbort = ctl;
    const sep = new TextEncoder().encode("\r\n\r\n");
    try {
      const r = await fetch(`/mjpeg/${encodeURIComponent(sid)}`, { headers: authHeaders(), signal: ctl.signal });
      if (!r.ok) throw new Error(`MJPEG: HTTP ${r.status}`);
      const reader = r.body.getReader();
      let buf = new Uint8Array(0);
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        const nb = new Uint8Array(buf.length + value.length);
        nb.set(buf); nb.set(value, buf.length); buf = nb;
        for (;;) {
          const he = indexOf(buf, sep, 0);
          if (he < 0) break;
          const head = new TextDecoder().decode(buf.subarray(0, he));
          const len = Number((/content-length:\s*(\d+)/i.exec(head) || [])[1]);
          const pts = Number((/x-pts:\s*([-\d.]+)/i.exec(head) || [])[1]);
          if (!(len >= 0) || buf.length < he + 4 + len) break;
          const jpeg = buf.slice(he + 4, he + 4 + len);
          buf = buf.slice(he + 4 + len);
          const bmp = await createImageBitmap(new Blob([jpeg], { type: "image/jpeg" }));
          if (g !== gen) return;
          if (canvas.width !== bmp.width || canvas.height !== bmp.height) {
            canvas.width = bmp.width; canvas.height = bmp.height;
          }
          canvas.getContext("2d").drawImage(bmp, 0, 0);
          bmp.close();
          shown(pts);
        }
      }
    } catch (e) {
      if (ctl.signal.aborted) return;
      console.warn("MJPEG:", e.message);
    }
    if (g === gen && mjpegAbort === ctl) {
      mjpegAbort = null;
      // The stream ended or the connection dropped: try again while the stream exists.
      setTimeout(() => { if (g === gen && S.state !== "ended") startMJPEG(sid, g); }, 1000);
    }
  }

  // ---------------------------------------------------------------- start
  $("picker").addEventListener("change", (e) => select(e.target.value));
  window.addEventListener("resize", drawOverlay);
  refreshStreams();
  setInterval(refreshStreams, 3000);
  setInterval(renderFaces, 1000);
})();
