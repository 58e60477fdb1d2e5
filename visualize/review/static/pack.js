// The review pack's one script: zoom for the diagrams and the example patients' search box. Local, no network.
(function () {
  "use strict";
  var LEGIBLE = 11; // px: no word of a diagram is drawn smaller than this, whatever "fit" would need
  function smallestFont(svg) {
    // the smallest font size the diagram uses, in the SVG's own units (graphviz writes font-size on each text)
    var sizes = Array.prototype.map.call(svg.querySelectorAll("text"), function (t) {
      return parseFloat(t.getAttribute("font-size") || "14");
    });
    return sizes.length ? Math.min.apply(null, sizes) : 14;
  }
  function legibleZoom(svg, base) {
    // the zoom at which the smallest text is LEGIBLE px: the viewBox maps its units onto base px at zoom 1
    var box = svg.viewBox && svg.viewBox.baseVal;
    var unitsToPx = box && box.width ? base / box.width : 1;
    return (LEGIBLE * 1.001) / (smallestFont(svg) * unitsToPx); // a hair over: rounding never gives 10.99 px
  }
  function setZoom(figure, factor) {
    var svg = figure.querySelector("svg");
    if (!svg) { return; }
    if (!svg.dataset.baseWidth) {
      svg.dataset.baseWidth = String(svg.getBBox ? svg.width.baseVal.value : svg.clientWidth);
      svg.dataset.baseHeight = String(svg.getBBox ? svg.height.baseVal.value : svg.clientHeight);
    }
    var base = parseFloat(svg.dataset.baseWidth);
    var baseHeight = parseFloat(svg.dataset.baseHeight) || base;
    var zoom = factor === null ? null : parseFloat(figure.dataset.zoom || "1") * factor;
    var floor = legibleZoom(svg, base);
    if (zoom === null) {
      // "fit": the whole diagram in its area, width and height, unless its words would become illegible; then
      // the legible size, and the area scrolls (the caption says so)
      var viewport = figure.querySelector(".viewport");
      var tall = Math.max(viewport.clientHeight, window.innerHeight * 0.78) - 4;
      zoom = Math.min((viewport.clientWidth - 4) / base, tall / baseHeight);
      figure.classList.toggle("too-large", zoom < floor);
      zoom = Math.max(zoom, floor);
      if (figure.dataset.opening) { zoom = Math.min(zoom, Math.max(1, floor)); } // opening never enlarges
    }
    zoom = Math.max(floor, Math.min(zoom, 6));
    figure.dataset.zoom = String(zoom);
    svg.style.width = (base * zoom) + "px";
    svg.removeAttribute("height");
  }
  document.querySelectorAll("figure.diagram").forEach(function (figure) {
    figure.querySelectorAll("[data-zoom-step]").forEach(function (button) {
      button.addEventListener("click", function () { setZoom(figure, parseFloat(button.dataset.zoomStep)); });
    });
    var fit = figure.querySelector("[data-zoom-fit]");
    if (fit) { fit.addEventListener("click", function () { setZoom(figure, null); }); }
    var svg = figure.querySelector("svg");
    var viewport = figure.querySelector(".viewport");
    if (svg && viewport && viewport.clientWidth > 0) {
      // every diagram opens fitted to its area (width and height), never so small that its words cannot be
      // read (LEGIBLE px): beyond that it scrolls
      figure.dataset.opening = "1";
      setZoom(figure, null);
      delete figure.dataset.opening;
    }
  });
  var search = document.getElementById("search");
  if (search) {
    var items = Array.prototype.slice.call(document.querySelectorAll("[data-search]"));
    var count = document.getElementById("search-count");
    var run = function () {
      var words = search.value.toLowerCase().split(/\s+/).filter(Boolean);
      var shown = 0;
      items.forEach(function (item) {
        var text = item.dataset.search.toLowerCase();
        var hit = words.every(function (w) { return text.indexOf(w) !== -1; });
        item.hidden = !hit;
        if (hit) { shown += 1; }
      });
      count.textContent = words.length ? shown + " of " + items.length + " shown" : "";
    };
    search.addEventListener("input", run);
  }
  var statusFilter = document.getElementById("sentence-status");
  if (statusFilter) {
    statusFilter.addEventListener("change", function () {
      var wanted = statusFilter.value;
      document.querySelectorAll("tr.sentence[data-status]").forEach(function (row) {
        row.hidden = Boolean(wanted) && row.dataset.status !== wanted;
      });
    });
  }
  document.querySelectorAll("details").forEach(function (d) {
    d.addEventListener("toggle", function () {
      if (d.open) {
        d.querySelectorAll("figure.diagram").forEach(function (figure) {
          var svg = figure.querySelector("svg");
          var viewport = figure.querySelector(".viewport");
          if (svg && !figure.dataset.fitted && svg.width.baseVal.value > viewport.clientWidth) {
            figure.dataset.fitted = "1";
            setZoom(figure, null);
          }
        });
      }
    });
  });
}());
