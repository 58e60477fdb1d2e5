// The review pack's one script: zoom for the diagrams and the example patients' search box. Local, no network.
(function () {
  "use strict";
  function setZoom(figure, factor) {
    var svg = figure.querySelector("svg");
    if (!svg) { return; }
    if (!svg.dataset.baseWidth) {
      svg.dataset.baseWidth = String(svg.getBBox ? svg.width.baseVal.value : svg.clientWidth);
    }
    var base = parseFloat(svg.dataset.baseWidth);
    var zoom = factor === null ? null : parseFloat(figure.dataset.zoom || "1") * factor;
    if (zoom === null) {
      var fit = figure.querySelector(".viewport").clientWidth - 4;
      zoom = fit / base;
    }
    zoom = Math.max(0.2, Math.min(zoom, 6));
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
    if (svg && viewport && viewport.clientWidth > 0 && svg.width.baseVal.value > viewport.clientWidth) {
      // a wide diagram starts fitted to the page, but never so small that its words cannot be read: beyond
      // that it scrolls; "fit" shows the whole of it
      var fitted = (viewport.clientWidth - 4) / svg.width.baseVal.value;
      setZoom(figure, Math.max(fitted, 0.7));
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
