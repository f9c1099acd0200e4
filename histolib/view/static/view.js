// histolib view: deep-zoom viewers in lock-step, overlays drawn on a canvas in level-0 pixels.
// The page's data is window.HISTOLIB_SCENE (scene.js). window.histolibView exposes the viewers
// and a state object (tiles loaded per viewer, shapes drawn per layer, synchronisations) for
// tests; the same state is written as JSON into #histolib-state.
(function () {
  'use strict';
  const scene = window.HISTOLIB_SCENE;
  const main = document.getElementById('viewers');
  const pointer = document.getElementById('pointer');
  const stateNode = document.getElementById('histolib-state');
  const state = {
    opened: 0, tilesLoaded: [], tilesFailed: [], drawn: {}, syncs: 0,
    layers: scene.layers.map(function (l) { return {id: l.id, count: l.count}; }),
  };
  const visible = {};
  const viewers = [];
  const overlays = [];
  let syncing = false;

  // Every shape once: its rings (level-0 px), bounding box and colours.
  const shapes = {};
  scene.layers.forEach(function (layer) {
    visible[layer.id] = layer.visible !== false;
    shapes[layer.id] = layer.geojson.features.map(function (f) {
      const polys = f.geometry.type === 'Polygon' ? [f.geometry.coordinates]
        : f.geometry.coordinates;
      let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
      polys.forEach(function (rings) { rings[0].forEach(function (p) {
        x0 = Math.min(x0, p[0]); y0 = Math.min(y0, p[1]);
        x1 = Math.max(x1, p[0]); y1 = Math.max(y1, p[1]);
      }); });
      return {polys: polys, box: [x0, y0, x1, y1], stroke: f.properties.stroke,
              fill: f.properties.fill || null};
    });
  });

  function publish() { stateNode.textContent = JSON.stringify(state); }

  // Every position on the page is in the first slide's level-0 px (the overlays' frame);
  // slide i's own level-0 px are those times scene.slides[i].scale (1 for a virtual IHC at
  // the H&E's resolution, 0.5 for one written at half of it).
  function scaleOf(index) { return scene.slides[index].scale || 1; }

  // Level-0 px of the first slide to element px of viewer ``index``: a scale and an offset.
  function transform(index) {
    const vp = viewers[index].viewport, f = scaleOf(index);
    const a = vp.imageToViewerElementCoordinates(new OpenSeadragon.Point(0, 0));
    const b = vp.imageToViewerElementCoordinates(new OpenSeadragon.Point(1000, 0));
    return {scale: f * (b.x - a.x) / 1000, own: (b.x - a.x) / 1000, x: a.x, y: a.y};
  }

  function draw(index) {
    const viewer = viewers[index];
    const canvas = overlays[index];
    if (!viewer.world.getItemCount()) { return; }
    const ratio = window.devicePixelRatio || 1;
    const w = viewer.container.clientWidth, h = viewer.container.clientHeight;
    if (canvas.width !== Math.round(w * ratio) || canvas.height !== Math.round(h * ratio)) {
      canvas.width = Math.round(w * ratio); canvas.height = Math.round(h * ratio);
    }
    const ctx = canvas.getContext('2d');
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    const t = transform(index);
    const view = [-t.x / t.scale, -t.y / t.scale, (w - t.x) / t.scale, (h - t.y) / t.scale];
    ctx.setTransform(t.scale * ratio, 0, 0, t.scale * ratio, t.x * ratio, t.y * ratio);
    ctx.lineWidth = 2 / t.scale;
    const drawn = {};
    scene.layers.forEach(function (layer) {
      let n = 0;
      if (visible[layer.id]) {
        ctx.globalAlpha = layer.kind === 'dice' ? 0.45 : 0.9;
        shapes[layer.id].forEach(function (s) {
          const b = s.box;
          if (b[2] < view[0] || b[0] > view[2] || b[3] < view[1] || b[1] > view[3]) { return; }
          ctx.beginPath();
          s.polys.forEach(function (rings) { rings.forEach(function (ring) {
            ring.forEach(function (p, i) { if (i) { ctx.lineTo(p[0], p[1]); }
                                           else { ctx.moveTo(p[0], p[1]); } });
            ctx.closePath();
          }); });
          if (s.fill) {
            const alpha = ctx.globalAlpha;
            ctx.globalAlpha = layer.kind === 'dice' ? 0.35 : 0.15;
            ctx.fillStyle = s.fill; ctx.fill('evenodd'); ctx.globalAlpha = alpha;
          }
          if (layer.kind !== 'dice') { ctx.strokeStyle = s.stroke; ctx.stroke(); }
          n += 1;
        });
      }
      drawn[layer.id] = n;
    });
    state.drawn[index] = drawn;
    scaleBar(index, t.own);
    publish();
  }

  // A bar of a round length (1, 2 or 5 x 10^k um) about 100 screen px long.
  function scaleBar(index, pxPerImagePx) {
    const node = document.getElementById('scalebar' + index);
    const mpp = scene.slides[index].mpp;
    if (!mpp || !(pxPerImagePx > 0)) { node.hidden = true; return; }
    const umPerPx = mpp / pxPerImagePx;
    const target = 100 * umPerPx;
    const power = Math.pow(10, Math.floor(Math.log10(target)));
    const nice = [5, 2, 1].map(function (m) { return m * power; })
      .find(function (v) { return v <= target; }) || power;
    node.hidden = false;
    node.querySelector('.bar').style.width = Math.round(nice / umPerPx) + 'px';
    node.querySelector('.label').textContent = nice >= 1000 ? (nice / 1000) + ' mm'
      : (nice >= 1 ? nice : nice.toPrecision(1)) + ' \u00b5m';
  }

  // Lock-step: the other viewers take this one's target centre and scale, in level-0 px. A
  // viewer moving to a target this function set is following, not leading: it is not echoed
  // back (rounding in the conversions would otherwise bounce the two for ever).
  const commanded = [];
  function near(a, b) { return Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(a), Math.abs(b)); }
  function follow(index) {
    if (syncing) { return; }
    const vp = viewers[index].viewport;
    const target = vp.getCenter(false), zoomTarget = vp.getZoom(false);
    const mine = commanded[index];
    if (mine && near(mine.x, target.x) && near(mine.y, target.y) && near(mine.z, zoomTarget)) {
      return;
    }
    commanded[index] = null;
    syncing = true;
    try {
      const own = vp.viewportToImageCoordinates(target), f = scaleOf(index);
      const centre = new OpenSeadragon.Point(own.x / f, own.y / f);  // first slide's px
      const zoom = vp.viewportToImageZoom(zoomTarget) * f;  // screen px a first-slide px
      viewers.forEach(function (other, j) {
        if (j === index || !other.world.getItemCount()) { return; }
        const g = scaleOf(j);
        other.viewport.zoomTo(other.viewport.imageToViewportZoom(zoom / g), null, false);
        other.viewport.panTo(other.viewport.imageToViewportCoordinates(
          new OpenSeadragon.Point(centre.x * g, centre.y * g)), false);
        const c = other.viewport.getCenter(false);
        commanded[j] = {x: c.x, y: c.y, z: other.viewport.getZoom(false)};
      });
      state.syncs += 1;
    } finally {
      syncing = false;
    }
  }

  function pane(slide, index) {
    const box = document.createElement('div');
    box.className = 'pane';
    box.innerHTML = '<div class="viewer" id="viewer' + index + '"></div>'
      + '<div class="pane-title"></div><canvas class="overlay"></canvas>'
      + '<div class="scalebar" id="scalebar' + index + '" hidden>'
      + '<div class="bar"></div><span class="label"></span></div>';
    box.querySelector('.pane-title').textContent = slide.name;
    main.appendChild(box);
    state.tilesLoaded.push(0); state.tilesFailed.push(0);
    const viewer = OpenSeadragon({
      element: box.querySelector('.viewer'),
      prefixUrl: 'static/images/',
      tileSources: slide.tileSource,
      drawer: 'canvas',
      showNavigator: false,
      showRotationControl: false,
      animationTime: 0.4,
      visibilityRatio: 0.2,
      gestureSettingsMouse: {clickToZoom: false},
    });
    viewers.push(viewer);
    overlays.push(box.querySelector('canvas.overlay'));
    viewer.addHandler('open', function () {
      state.opened += 1;
      draw(index);
      if (state.opened === scene.slides.length) {  // all laid out: start together, at home
        window.requestAnimationFrame(function () { viewers[0].viewport.goHome(true); });
      }
    });
    viewer.addHandler('tile-loaded', function () { state.tilesLoaded[index] += 1; publish(); });
    viewer.addHandler('tile-load-failed', function () {
      state.tilesFailed[index] += 1; publish();
    });
    viewer.addHandler('viewport-change', function () { follow(index); });
    viewer.addHandler('update-viewport', function () { draw(index); });
    viewer.addHandler('resize', function () { draw(index); });
    new OpenSeadragon.MouseTracker({
      element: viewer.container,
      moveHandler: function (event) {
        if (!viewer.world.getItemCount()) { return; }
        const p = viewer.viewport.viewerElementToImageCoordinates(event.position);
        const f = scaleOf(index);
        pointer.textContent = 'x, y: ' + Math.round(p.x / f) + ', ' + Math.round(p.y / f) + ' px';
      },
    });
  }

  function toggles() {
    const bar = document.getElementById('layers');
    scene.layers.forEach(function (layer) {
      const label = document.createElement('label');
      const box = document.createElement('input');
      box.type = 'checkbox'; box.checked = visible[layer.id]; box.dataset.layer = layer.id;
      box.addEventListener('change', function () {
        visible[layer.id] = box.checked;
        viewers.forEach(function (v, i) { draw(i); });
      });
      label.appendChild(box);
      label.appendChild(document.createTextNode(' ' + layer.name + ' (' + layer.count + ')'));
      const legend = document.createElement('span');
      legend.className = 'legend';
      Object.keys(layer.legend).forEach(function (name) {
        const swatch = document.createElement('span');
        swatch.className = 'swatch'; swatch.style.background = layer.legend[name];
        legend.appendChild(swatch);
        legend.appendChild(document.createTextNode(name));
      });
      label.appendChild(legend);
      bar.appendChild(label);
    });
  }

  toggles();
  scene.slides.forEach(pane);
  window.histolibView = {
    viewers: viewers, state: state, visible: visible,
    setLayer: function (id, on) {
      visible[id] = !!on;
      const box = document.querySelector('input[data-layer="' + id + '"]');
      if (box) { box.checked = !!on; }
      viewers.forEach(function (v, i) { draw(i); });
    },
  };
  publish();
}());
