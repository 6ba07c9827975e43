// Fetches a job's similar jobs from the JSON endpoint, exactly as the board's frontend would.
(function () {
  "use strict";
  var box = document.getElementById("similar");
  if (!box) { return; }
  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) { node.className = cls; }
    if (text !== undefined && text !== null) { node.textContent = text; }
    return node;
  }
  fetch(box.getAttribute("data-url"), { headers: { "Accept": "application/json" } })
    .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.json(); })
    .then(function (data) {
      box.textContent = "";
      if (!data.similarJobs.length) { box.appendChild(el("p", "muted", "No similar jobs yet.")); return; }
      var list = el("ol", "similar");
      data.similarJobs.forEach(function (item) {
        var li = el("li");
        var a = el("a", null, item.job.title);
        a.href = "/jobs/" + encodeURIComponent(item.job.id);
        li.appendChild(a);
        var meta = [item.job.company, item.job.location].filter(Boolean).join(" · ");
        if (meta) { li.appendChild(el("div", "muted", meta)); }
        if (item.score !== null) { li.appendChild(el("span", "score", "score " + item.score.toFixed(3))); }
        list.appendChild(li);
      });
      box.appendChild(list);
      box.appendChild(el("p", "muted small", data.cached
        ? "By meaning (computed " + new Date(data.computedAt).toLocaleString() + ")"
        : "Same category or location (embeddings not ready yet)"));
    })
    .catch(function () { box.textContent = ""; box.appendChild(el("p", "muted", "Similar jobs are unavailable right now.")); });
})();
