// Trellis console: the theme toggle, and live regions (data-refresh)
// that re-fetch their page's fragment every few seconds. Nothing else:
// every page works without it.
(function () {
  "use strict";
  var root = document.documentElement;
  var saved = null;
  try { saved = localStorage.getItem("trellis-theme"); } catch (e) {}
  if (saved === "light" || saved === "dark") root.dataset.theme = saved;

  document.addEventListener("DOMContentLoaded", function () {
    var btn = document.getElementById("theme");
    if (btn) {
      btn.addEventListener("click", function () {
        var dark = root.dataset.theme
          ? root.dataset.theme === "dark"
          : window.matchMedia("(prefers-color-scheme: dark)").matches;
        root.dataset.theme = dark ? "light" : "dark";
        try { localStorage.setItem("trellis-theme", root.dataset.theme); } catch (e) {}
      });
    }
    document.querySelectorAll("[data-refresh]").forEach(function (el) {
      var every = parseInt(el.dataset.refresh, 10) || 2000;
      var busy = false;
      setInterval(function () {
        if (busy || document.hidden) return;
        // Keep keyboard focus across the swap.
        var focused = document.activeElement && el.contains(document.activeElement)
          ? document.activeElement.getAttribute("data-edge") : null;
        busy = true;
        var q = new URLSearchParams(location.search);
        q.set("fragment", "1");
        fetch(location.pathname + "?" + q.toString(), { credentials: "same-origin", headers: { "Accept": "text/html" } })
          .then(function (r) {
            if (r.status === 401 || r.redirected) { location.reload(); return null; }
            return r.text();
          })
          .then(function (html) {
            if (html === null) return;
            el.innerHTML = html;
            if (focused) {
              var again = el.querySelector('[data-edge="' + CSS.escape(focused) + '"]');
              if (again) again.focus();
            }
          })
          .catch(function () {})
          .finally(function () { busy = false; });
      }, every);
    });
  });
})();
