"""The JavaScript of the HTML viewer (kept here as a string so that the
page needs no file next to it and the package no data files).

It reproduces, in float64, the C kernel of ``mode="upsample-argmax"``
(``csrc/gm_transfer.c``, ``csrc/gm_transfer_impl.h``) step by step, in
the same order of operations:

* taps: ``s = ((2 dst + 1) n_in - n_out) / (2 n_out)`` (``s = dst`` when the
  sizes agree), negative ``s`` clamped to 0, ``i0 = floor(s)``, both taps on
  the last index with weight 0 at the upper border;
* the source descriptor at pixel ``(floor(y), floor(x))``: four weights
  computed in double, the bilinear sum, then scaled to unit length;
* the five Gram tables and the grid dot products summed in 16 lanes that are
  reduced pairwise (8, 4, 2, 1), as ``gm_tr_gram5`` / ``gm_tr_dot4`` do;
* rows interpolated first (per grid row, over target pixel columns), then
  columns; pixels ranked by ``num |num| / d`` with ``d`` below the smallest
  normal double counted as a zero vector; the first maximum in row-major
  order wins (strict comparison).

Click coordinates go through the evaluation's mapping
(:func:`geomatch.eval.evaluate.transfer_pair`): minus the frame origin,
clipped to ``[0, size - 1e-3]``, rounded to float32 (``Math.fround``).
"""

VIEWER_JS = r"""
(function boot(tries) {
  "use strict";
  // a notebook front end may run this before its output is in the document:
  // wait for the viewer's element (up to 10 s)
  var root = document.getElementById("__ID__");
  if (!root) {
    if (tries < 200) setTimeout(function () { boot(tries + 1); }, 50);
    return;
  }
  if (root.geomatch) return;
  var data = JSON.parse(root.querySelector("script[type='application/json']").textContent);
  var TINY = 2.2250738585072014e-308;

  function b64bytes(s) {
    var bin = atob(s), n = bin.length, out = new Uint8Array(n);
    for (var i = 0; i < n; i++) out[i] = bin.charCodeAt(i);
    return out;
  }
  function halfToFloat(h) {
    var s = (h & 0x8000) ? -1 : 1, e = (h >> 10) & 0x1f, f = h & 0x3ff;
    if (e === 0) return s * f * Math.pow(2, -24);
    if (e === 31) return f ? NaN : s * Infinity;
    return s * (1 + f / 1024) * Math.pow(2, e - 15);
  }
  function decode(s, precision) {
    var bytes = b64bytes(s), dv = new DataView(bytes.buffer), out, i;
    if (precision === "float16") {
      out = new Float64Array(bytes.length / 2);
      for (i = 0; i < out.length; i++) out[i] = halfToFloat(dv.getUint16(2 * i, true));
    } else {
      out = new Float64Array(bytes.length / 4);
      for (i = 0; i < out.length; i++) out[i] = dv.getFloat32(4 * i, true);
    }
    return out;
  }
  function taps(dst, nIn, nOut) {
    var s = (nIn === nOut) ? dst : ((2 * dst + 1) * nIn - nOut) / (2 * nOut);
    if (s < 0) s = 0;
    var f = Math.floor(s);
    if (f >= nIn - 1) return [nIn - 1, nIn - 1, 0];
    return [f, f + 1, s - f];
  }
  function lanes() { return [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]; }
  function reduce(a) {
    for (var s = 8; s > 0; s >>= 1) for (var j = 0; j < s; j++) a[j] += a[j + s];
    return a[0];
  }
  function dot(x, xo, y, yo, n) {
    var a = lanes(), i = 0, j;
    for (; i + 16 <= n; i += 16) for (j = 0; j < 16; j++) a[j] += x[xo + i + j] * y[yo + i + j];
    for (j = 0; i < n; i++, j++) a[j] += x[xo + i] * y[yo + i];
    return reduce(a);
  }

  var D = data.dim;
  var S = data.src, T = data.trg;
  var sf = decode(data.feat_src, data.precision), tf = decode(data.feat_trg, data.precision);
  var hs = S.grid[0], ws = S.grid[1], ht = T.grid[0], wt = T.grid[1];
  var SW = Math.round(S.frame[2]), SH = Math.round(S.frame[3]);
  var TW = Math.round(T.frame[2]), TH = Math.round(T.frame[3]);

  // target tables: Gram products of each grid vector with its right, lower
  // and diagonal neighbours (gm_tr_row)
  var hw = ht * wt;
  var N = new Float64Array(hw), Hn = new Float64Array(hw), V = new Float64Array(hw),
      D1 = new Float64Array(hw), D2 = new Float64Array(hw);
  (function () {
    for (var r = 0; r < ht; r++) {
      var r1 = r + 1 < ht ? r + 1 : r;
      for (var c = 0; c < wt; c++) {
        var c1 = c + 1 < wt ? c + 1 : c;
        var t00 = (r * wt + c) * D, t01 = (r * wt + c1) * D, t10 = (r1 * wt + c) * D,
            t11 = (r1 * wt + c1) * D;
        var a0 = lanes(), a1 = lanes(), a2 = lanes(), a3 = lanes(), a4 = lanes(), i = 0, j;
        for (; i + 16 <= D; i += 16) {
          for (j = 0; j < 16; j++) {
            var x = tf[t00 + i + j], y = tf[t01 + i + j], z = tf[t10 + i + j];
            a0[j] += x * x; a1[j] += x * y; a2[j] += x * z; a3[j] += x * tf[t11 + i + j];
            a4[j] += y * z;
          }
        }
        for (j = 0; i < D; i++, j++) {
          var x2 = tf[t00 + i], y2 = tf[t01 + i], z2 = tf[t10 + i];
          a0[j] += x2 * x2; a1[j] += x2 * y2; a2[j] += x2 * z2; a3[j] += x2 * tf[t11 + i];
          a4[j] += y2 * z2;
        }
        var k = r * wt + c;
        N[k] = reduce(a0); Hn[k] = reduce(a1); V[k] = reduce(a2); D1[k] = reduce(a3);
        D2[k] = reduce(a4);
      }
    }
  })();
  var cc0 = new Int32Array(TW), cc1 = new Int32Array(TW), cb0 = new Float64Array(TW),
      cb1 = new Float64Array(TW), rr0 = new Int32Array(TH), rr1 = new Int32Array(TH),
      ra0 = new Float64Array(TH), ra1 = new Float64Array(TH);
  (function () {
    var i, tp;
    for (i = 0; i < TW; i++) { tp = taps(i, wt, TW); cc0[i] = tp[0]; cc1[i] = tp[1]; cb0[i] = 1.0 - tp[2]; cb1[i] = tp[2]; }
    for (i = 0; i < TH; i++) { tp = taps(i, ht, TH); rr0[i] = tp[0]; rr1[i] = tp[1]; ra0[i] = 1.0 - tp[2]; ra1[i] = tp[2]; }
  })();
  var nrow = new Float64Array(ht * TW), mx = new Float64Array(ht * TW);
  (function () {
    for (var r = 0; r < ht; r++) {
      for (var X = 0; X < TW; X++) {
        var c0 = r * wt + cc0[X], c1 = r * wt + cc1[X], b0 = cb0[X], b1 = cb1[X];
        nrow[r * TW + X] = b0 * b0 * N[c0] + 2 * b0 * b1 * Hn[c0] + b1 * b1 * N[c1];
        mx[r * TW + X] = b0 * b0 * V[c0] + b1 * b1 * V[c1] + b0 * b1 * (D1[c0] + D2[c0]);
      }
    }
  })();

  // source descriptor at pixel (floor(y), floor(x)) of the frame (gm_tr_source_desc)
  function sourceDesc(x, y) {
    var ty = taps(Math.floor(y), hs, SH), tx = taps(Math.floor(x), ws, SW);
    var wy = ty[2], wx = tx[2];
    var w00 = (1.0 - wy) * (1.0 - wx), w01 = (1.0 - wy) * wx, w10 = wy * (1.0 - wx), w11 = wy * wx;
    var s00 = (ty[0] * ws + tx[0]) * D, s01 = (ty[0] * ws + tx[1]) * D,
        s10 = (ty[1] * ws + tx[0]) * D, s11 = (ty[1] * ws + tx[1]) * D;
    var q = new Float64Array(D), nn = 0, d;
    for (d = 0; d < D; d++) {
      q[d] = w00 * sf[s00 + d] + w01 * sf[s01 + d] + w10 * sf[s10 + d] + w11 * sf[s11 + d];
      nn += q[d] * q[d];
    }
    if (nn > 0) { var inv = 1.0 / Math.sqrt(nn); for (d = 0; d < D; d++) q[d] *= inv; }
    return q;
  }

  // the evaluation's mapping of an image pixel into the frame (transfer_pair)
  function toFrame(px, py) {
    var x = px - S.frame[0], y = py - S.frame[1];
    x = Math.min(Math.max(x, 0), SW - 1e-3);
    y = Math.min(Math.max(y, 0), SH - 1e-3);
    return [Math.fround(x), Math.fround(y)];
  }

  // upsample-argmax of one source pixel.  Returns the match, its cosine and
  // cos(X, Y), the cosine at any frame pixel (for the heatmap), from the
  // per-grid-row arrays: memory O(h W), never O(H W).
  function matchPoint(px, py) {
    var f = toFrame(px, py), q = sourceDesc(f[0], f[1]);
    var g = new Float64Array(hw), r, c, X, Y;
    for (r = 0; r < ht; r++) for (c = 0; c < wt; c++) g[r * wt + c] = dot(q, 0, tf, (r * wt + c) * D, D);
    var P = new Float64Array(ht * TW);
    for (r = 0; r < ht; r++) {
      for (X = 0; X < TW; X++) P[r * TW + X] = cb0[X] * g[r * wt + cc0[X]] + cb1[X] * g[r * wt + cc1[X]];
    }
    var best = -Infinity, bx = 0, by = 0, bnum = 0, bd = 0;
    for (Y = 0; Y < TH; Y++) {
      var r0 = rr0[Y], r1 = rr1[Y], a0 = ra0[Y], a1 = ra1[Y];
      var w00 = a0 * a0, w11 = a1 * a1, w01 = 2 * a0 * a1;
      for (X = 0; X < TW; X++) {
        var dd = w00 * nrow[r0 * TW + X] + w11 * nrow[r1 * TW + X] + w01 * mx[r0 * TW + X];
        var inv = dd >= TINY ? 1.0 / dd : 0.0;
        var num = a0 * P[r0 * TW + X] + a1 * P[r1 * TW + X];
        var val = num * Math.abs(num) * inv;
        if (val > best) { best = val; bx = X; by = Y; bnum = num; bd = dd; }
      }
    }
    function cos(X, Y) {
      var r0 = rr0[Y], r1 = rr1[Y], a0 = ra0[Y], a1 = ra1[Y];
      var dd = a0 * a0 * nrow[r0 * TW + X] + a1 * a1 * nrow[r1 * TW + X] + 2 * a0 * a1 * mx[r0 * TW + X];
      return dd >= TINY ? (a0 * P[r0 * TW + X] + a1 * P[r1 * TW + X]) / Math.sqrt(dd) : 0;
    }
    var score = bd >= TINY ? bnum / Math.sqrt(bd) : 0;
    return { x: bx + T.frame[0], y: by + T.frame[1], score: score, cos: cos };
  }

  // ------------------------------------------------------------------ UI
  var srcCanvas = root.querySelector(".gm-src"), trgCanvas = root.querySelector(".gm-trg");
  var heatCanvas = root.querySelector(".gm-heat"), list = root.querySelector(".gm-list");
  var status = root.querySelector(".gm-status");
  var srcImg = new Image(), trgImg = new Image(), loaded = 0;
  var clicks = [];
  var COLORS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6",
                "#bcf60c", "#fabebe", "#008080", "#e6beff", "#9a6324", "#fffac8", "#800000",
                "#aaffc3", "#808000", "#ffd8b1", "#000075", "#808080", "#ffe119"];
  function colormap(v) {  // [-1, 1] -> RGB (blue - white - red)
    var t = Math.max(-1, Math.min(1, v));
    if (t >= 0) return [255, Math.round(255 * (1 - t)), Math.round(255 * (1 - t))];
    return [Math.round(255 * (1 + t)), Math.round(255 * (1 + t)), 255];
  }
  function marker(ctx, x, y, col, label, scale) {
    ctx.beginPath(); ctx.arc(x + 0.5, y + 0.5, 5 * scale, 0, 2 * Math.PI);
    ctx.fillStyle = col; ctx.fill(); ctx.lineWidth = 1.5 * scale; ctx.strokeStyle = "#fff"; ctx.stroke();
    ctx.font = (11 * scale) + "px sans-serif"; ctx.fillStyle = "#fff";
    ctx.fillText(label, x + 7 * scale, y - 6 * scale);
  }
  // canvases show the images at their display size (S.dw x S.dh); points are
  // in original pixels and scaled for drawing
  function redraw() {
    var s = srcCanvas.getContext("2d"), t = trgCanvas.getContext("2d");
    s.drawImage(srcImg, 0, 0, S.dw, S.dh); t.drawImage(trgImg, 0, 0, T.dw, T.dh);
    // markers of a constant on-screen size: canvas pixels per displayed pixel
    var ss = S.dw / (srcCanvas.getBoundingClientRect().width || S.dw),
        ts = T.dw / (trgCanvas.getBoundingClientRect().width || T.dw);
    clicks.forEach(function (m, i) {
      var col = COLORS[i % COLORS.length];
      marker(s, (m.src[0] + 0.5) * S.dw / S.width - 0.5, (m.src[1] + 0.5) * S.dh / S.height - 0.5,
             col, String(i + 1), ss);
      marker(t, (m.x + 0.5) * T.dw / T.width - 0.5, (m.y + 0.5) * T.dh / T.height - 0.5,
             col, String(i + 1), ts);
    });
  }
  // heatmap at display resolution: each canvas pixel shows the cosine at the
  // target pixel under its centre
  // (colours stretched over the map's own range: blue = lowest, red = highest)
  function drawHeat(cos) {
    var ctx = heatCanvas.getContext("2d"), img = ctx.createImageData(T.dw, T.dh);
    var vals = new Float32Array(T.dw * T.dh), lo = Infinity, hi = -Infinity, i, j;
    for (i = 0; i < T.dh; i++) {
      var y = Math.min(T.height - 1, Math.floor((i + 0.5) * T.height / T.dh));
      var fy = Math.min(TH - 1, Math.max(0, Math.floor(y - T.frame[1] + 0.5)));
      for (j = 0; j < T.dw; j++) {
        var x = Math.min(T.width - 1, Math.floor((j + 0.5) * T.width / T.dw));
        var fx = Math.min(TW - 1, Math.max(0, Math.floor(x - T.frame[0] + 0.5)));
        var v = cos(fx, fy);
        vals[i * T.dw + j] = v;
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
    }
    var span = hi > lo ? hi - lo : 1;
    for (i = 0; i < vals.length; i++) {
      var rgb = colormap(2 * (vals[i] - lo) / span - 1), o = 4 * i;
      img.data[o] = rgb[0]; img.data[o + 1] = rgb[1]; img.data[o + 2] = rgb[2]; img.data[o + 3] = 150;
    }
    ctx.putImageData(img, 0, 0);
    return [lo, hi];
  }
  function click(px, py) {
    var m = matchPoint(px, py);
    m.src = [px, py];
    clicks.push(m);
    var range = drawHeat(m.cos);
    delete m.cos;
    redraw();
    var li = document.createElement("li");
    li.className = "gm-match";
    li.setAttribute("data-src", px + "," + py);
    li.setAttribute("data-match", m.x + "," + m.y);
    li.setAttribute("data-score", String(m.score));
    li.textContent = "(" + px + ", " + py + ") \u2192 (" + (+m.x.toFixed(2)) + ", " +
      (+m.y.toFixed(2)) + ")  cos " + m.score.toFixed(3);
    li.style.color = COLORS[(clicks.length - 1) % COLORS.length];
    list.appendChild(li);
    status.textContent = clicks.length + " point(s); last: cosine " + m.score.toFixed(3) +
      "; heatmap from blue (" + range[0].toFixed(3) + ") to red (" + range[1].toFixed(3) + ")";
    return m;
  }
  srcCanvas.addEventListener("click", function (e) {
    var rect = srcCanvas.getBoundingClientRect();
    var px = Math.floor((e.clientX - rect.left) * S.width / rect.width);
    var py = Math.floor((e.clientY - rect.top) * S.height / rect.height);
    px = Math.min(Math.max(px, 0), S.width - 1); py = Math.min(Math.max(py, 0), S.height - 1);
    click(px, py);
  });
  root.querySelector(".gm-clear").addEventListener("click", function () {
    clicks = []; list.innerHTML = "";
    heatCanvas.getContext("2d").clearRect(0, 0, T.dw, T.dh);
    status.textContent = "cleared"; redraw();
  });
  function ready() {
    if (++loaded < 2) return;
    redraw();
    (data.points || []).forEach(function (p) { click(p[0], p[1]); });
    root.setAttribute("data-ready", "1");
    if (!(data.points || []).length) status.textContent = "click on the source image";
  }
  srcImg.onload = ready; trgImg.onload = ready;
  srcImg.src = S.img; trgImg.src = T.img;
  root.geomatch = { click: click, match: matchPoint, clicks: clicks };
})(0);
"""
