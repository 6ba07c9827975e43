// Live refresh of the dashboard: every few seconds fetch this page's live regions
// (?fragment=live) and swap the ones that changed. Paused while the tab is hidden.
(function () {
  "use strict";
  var regions = document.querySelectorAll("[data-live][id^='region-']");
  var status = document.getElementById("live-status");
  if (!regions.length) { return; }
  var INTERVAL = parseInt((status && status.getAttribute("data-refresh-ms")) || "5000", 10) || 5000;

  var timer = null;
  var failures = 0;
  var busy = false;

  function say(text, css) {
    if (!status) { return; }
    status.textContent = text;
    status.className = "live-status " + (css || "");
  }

  function fragmentUrl() {
    var url = new URL(window.location.href);
    url.searchParams.set("fragment", "live");
    return url.toString();
  }

  function holdsFocus(el) {
    var active = document.activeElement;
    return active && active !== document.body && el.contains(active);
  }

  function swap(html) {
    var doc = new DOMParser().parseFromString(html, "text/html");
    doc.querySelectorAll("template[data-region]").forEach(function (tpl) {
      var target = document.getElementById("region-" + tpl.getAttribute("data-region"));
      if (!target || holdsFocus(target)) { return; }
      var fresh = tpl.innerHTML.trim();
      if (fresh && target.innerHTML.trim() !== fresh) {
        target.innerHTML = fresh;
      }
    });
  }

  function refresh() {
    if (busy || document.hidden) { return; }
    busy = true;
    fetch(fragmentUrl(), {credentials: "same-origin", headers: {"Accept": "text/html"}, redirect: "manual"})
      .then(function (response) {
        if (response.type === "opaqueredirect" || response.status === 401) {
          say("signed out: reload", "bad");
          stop();
          return null;
        }
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.text();
      })
      .then(function (html) {
        if (html === null) { return; }
        swap(html);
        failures = 0;
        say("live · " + new Date().toLocaleTimeString(), "ok");
      })
      .catch(function () {
        failures += 1;
        say("refresh failed" + (failures > 1 ? " (" + failures + "×)" : ""), "bad");
      })
      .finally(function () { busy = false; });
  }

  function start() {
    if (timer === null) { timer = window.setInterval(refresh, INTERVAL); }
  }

  function stop() {
    if (timer !== null) { window.clearInterval(timer); timer = null; }
  }

  document.addEventListener("visibilitychange", function () {
    if (document.hidden) {
      stop();
      say("paused", "");
    } else {
      refresh();
      start();
    }
  });

  say("live", "ok");
  start();
})();
