// Flotilla's console: shows every instant in the viewer's own time zone, keeping UTC on
// hover. The pages work without it (they show UTC).
"use strict";
(function () {
  var pad = function (n) { return (n < 10 ? "0" : "") + n; };
  var local = function (date, withSeconds) {
    var text = date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate()) +
      " " + pad(date.getHours()) + ":" + pad(date.getMinutes());
    return withSeconds ? text + ":" + pad(date.getSeconds()) : text;
  };
  var zone = function (date) {
    try {
      var part = new Intl.DateTimeFormat(undefined, { timeZoneName: "short" })
        .formatToParts(date).filter(function (p) { return p.type === "timeZoneName"; })[0];
      return part ? " " + part.value : "";
    } catch (e) { return ""; }
  };
  document.querySelectorAll("time[datetime]").forEach(function (node) {
    var date = new Date(node.getAttribute("datetime"));
    if (isNaN(date.getTime())) { return; }
    node.title = node.getAttribute("datetime") + " UTC";
    node.textContent = local(date, true) + zone(date);
  });
  // The plot's time axis: the time of day for a day or less, the date beyond.
  document.querySelectorAll("text[data-ms]").forEach(function (node) {
    var date = new Date(Number(node.getAttribute("data-ms")));
    var span = Number(node.getAttribute("data-span"));
    node.textContent = span <= 86400000 ? pad(date.getHours()) + ":" + pad(date.getMinutes())
      : pad(date.getMonth() + 1) + "-" + pad(date.getDate());
  });
})();
