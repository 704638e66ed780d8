// The workstation's one script: the worklist follows the server's events; the
// report form marks a critical conclusion and asks for confirmation. Labels
// come from the page (data attributes rendered from the message table).
(function () {
  "use strict";
  var rows = document.getElementById("worklist-rows");
  var live = document.getElementById("live");
  function refresh() {
    fetch("/ws/worklist/rows", {credentials: "same-origin", cache: "no-store"})
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html === null) { return; }
        var current = document.getElementById("worklist-rows");
        current.insertAdjacentHTML("afterend", html);
        current.remove();
      });
  }
  if (rows && window.EventSource) {
    var source = new EventSource("/ws/events");
    var connected = false;
    source.addEventListener("ready", function () {
      live.dataset.state = "live";
      if (connected) { refresh(); }  // a new stream: what changed in between is fetched
      connected = true;
    });
    source.addEventListener("worklist", function () { refresh(); });
    source.addEventListener("ended", function () { source.close(); window.location.reload(); });
    source.onerror = function () { live.dataset.state = "reconnecting"; };
    setInterval(refresh, 30000);  // the time left moves on without any event
  }
  function guard(form) {
    if (!form) { return; }
    var select = form.querySelector("select[name=conclusion]");
    var box = form.querySelector("input[name=critical]");
    select.addEventListener("change", function () {
      var option = select.options[select.selectedIndex];
      if (option && option.dataset.critical === "1") { box.checked = true; }
    });
    form.addEventListener("submit", function (event) {
      var option = select.options[select.selectedIndex];
      if (option && option.dataset.critical === "1") { box.checked = true; }
      if (!box.checked) { return; }
      if (!window.confirm(form.dataset.confirm)) { event.preventDefault(); return; }
      form.querySelector("input[name=confirm_critical]").value = "1";
    });
  }
  guard(document.getElementById("report-form"));
  guard(document.getElementById("amend-form"));
})();
