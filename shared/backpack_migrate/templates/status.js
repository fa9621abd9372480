(function () {
  "use strict";
  // Polls status.json while the move runs and swaps in the part of the page that changed.
  var live = document.getElementById("live");
  var refresh = document.querySelector(".refresh");
  if (!live || !window.fetch) { return; }
  if (refresh) { refresh.hidden = true; }
  function poll() {
    fetch("status.json", {cache: "no-store", credentials: "same-origin"})
      .then(function (answer) { if (!answer.ok) { throw new Error(answer.status); } return answer.json(); })
      .then(function (data) {
        if (data.digest !== live.dataset.digest) {
          live.innerHTML = data.html;
          live.dataset.digest = data.digest;
        }
        live.dataset.finished = String(data.finished);
        if (!data.finished) { window.setTimeout(poll, 3000); }
      })
      .catch(function () {
        // Offline or the service is busy: offer the link again and try later.
        if (refresh) { refresh.hidden = false; }
        window.setTimeout(poll, 10000);
      });
  }
  window.setTimeout(poll, 3000);
})();
