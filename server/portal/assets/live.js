// Keeps the message log live: rows of new events arrive as server-sent
// events (HTML the portal rendered and escaped) and go on top of the log.
(() => {
  const log = document.getElementById("log");
  if (!log || !log.dataset.live || !window.EventSource) {
    return;
  }
  const status = document.getElementById("live-status");
  const source = new EventSource(log.dataset.live);
  source.addEventListener("row", (message) => {
    const empty = document.getElementById("log-empty");
    if (empty) {
      empty.remove();
    }
    log.insertAdjacentHTML("afterbegin", message.data);
    const row = log.firstElementChild;
    if (row) {
      row.classList.add("new");
    }
    if (status) {
      status.textContent = "New events appear here as they are sent.";
    }
  });
  source.addEventListener("error", () => {
    if (status && source.readyState === EventSource.CLOSED) {
      status.textContent = "Live updates stopped: reload the page to resume.";
    }
  });
})();
