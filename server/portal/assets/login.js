// Exchanges the link's secret (after `#`, never sent to a server) for the
// session cookie, then leaves the secret out of the address bar and history.
(async () => {
  const secret = location.hash.slice(1);
  history.replaceState(null, "", location.pathname);
  const status = document.getElementById("status");
  if (!secret) {
    status.textContent = "This link is incomplete: open the whole link you were given.";
    return;
  }
  const response = await fetch("/session", {
    method: "POST",
    body: secret,
    headers: { "content-type": "text/plain", "x-herald-portal": "1" },
    credentials: "same-origin",
  });
  if (response.ok) {
    location.replace("/");
  } else {
    status.textContent = await response.text();
  }
})();
