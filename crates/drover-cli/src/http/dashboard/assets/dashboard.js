// Drover dashboard: keeps the [data-live] parts of a page fresh while the tab is visible,
// asks before every action, and sends actions to the JSON API (which checks everything).
"use strict";
(() => {
  const REFRESH_MS = 3000;
  let inflight = false;
  let lastOk = Date.now();

  const live = () => document.getElementById("live");
  const liveText = (text, cls) => {
    const el = live();
    if (!el) return;
    el.className = "live " + (cls || "");
    document.getElementById("live-text").textContent = text;
  };

  // Replaces each [data-live] element by its fresh copy, keeping what the operator selected.
  async function refresh() {
    if (document.hidden || inflight || !document.querySelector("[data-live]")) return;
    inflight = true;
    try {
      const res = await fetch(location.href, { headers: { "X-Drover-Live": "1" }, credentials: "same-origin" });
      if (res.redirected || !res.ok) throw new Error("HTTP " + res.status);
      const doc = new DOMParser().parseFromString(await res.text(), "text/html");
      const picked = new Set([...document.querySelectorAll("input.pick:checked")].map((c) => c.value));
      const matching = document.getElementById("select-matching")?.checked;
      for (const el of document.querySelectorAll("[data-live]")) {
        const fresh = doc.getElementById(el.id);
        // Unchanged regions stay as they are, so nothing under the pointer moves for nothing.
        if (fresh && fresh.innerHTML !== el.innerHTML) el.replaceWith(document.adoptNode(fresh));
      }
      for (const box of document.querySelectorAll("input.pick")) box.checked = picked.has(box.value);
      const all = document.getElementById("select-matching");
      if (all) all.checked = !!matching;
      updateSelection();
      lastOk = Date.now();
      document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed || 0) + 1);
      liveText("live", "");
    } catch (err) {
      liveText("offline since " + new Date(lastOk).toLocaleTimeString(), "stale");
    } finally {
      inflight = false;
    }
  }

  document.addEventListener("visibilitychange", () => {
    if (document.hidden) liveText("paused", "paused");
    else refresh();
  });
  setInterval(refresh, REFRESH_MS);

  function toast(text, error) {
    const el = document.getElementById("toast");
    el.textContent = text;
    el.className = "show" + (error ? " error" : "");
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => (el.className = ""), 5000);
  }

  // Asks `question` in the page's dialog; resolves true when the button named after the action
  // (`verb`, like "Cancel 5 jobs") is pressed. The other one is "Back", never "Cancel", which
  // would read as the action itself when the action cancels jobs.
  function confirmAction(question, danger, verb) {
    const dialog = document.getElementById("confirm");
    document.getElementById("confirm-text").textContent = question;
    const ok = document.getElementById("confirm-ok");
    ok.className = danger ? "danger" : "";
    ok.textContent = verb || "Confirm";
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
      dialog.returnValue = "";
      dialog.showModal();
    });
  }

  async function post(url, body) {
    const res = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body || {}),
    });
    const data = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(data.error ? data.error.message : "HTTP " + res.status);
    return data;
  }

  const plural = (n, word) => n.toLocaleString() + " " + word + (n === 1 ? "" : "s");
  const capitalized = (word) => word[0].toUpperCase() + word.slice(1);

  // Bulk actions on the job list: the selected rows, or every job the filter matches.
  function selection() {
    const all = document.getElementById("select-matching");
    if (all && all.checked) return { matching: true };
    return { ids: [...document.querySelectorAll("input.pick:checked")].map((c) => Number(c.value)) };
  }

  function updateSelection() {
    const label = document.getElementById("selected-count");
    if (!label) return;
    const sel = selection();
    const count = sel.matching ? null : sel.ids.length;
    label.textContent = sel.matching ? "every job that matches" : count ? plural(count, "job") + " selected" : "none selected";
    for (const b of document.querySelectorAll("[data-bulk]")) b.disabled = !sel.matching && !count;
    const page = document.getElementById("select-page");
    const boxes = document.querySelectorAll("input.pick");
    if (page) page.checked = boxes.length > 0 && [...boxes].every((b) => b.checked);
  }

  async function countMatching(filter) {
    const query = new URLSearchParams(filter);
    query.set("limit", "10000");
    const res = await fetch("/api/v1/jobs/count?" + query, { credentials: "same-origin" });
    const data = await res.json();
    if (!res.ok) throw new Error(data.error ? data.error.message : "HTTP " + res.status);
    return data;
  }

  async function bulk(action) {
    const sel = selection();
    const filter = JSON.parse(document.getElementById("bulk").dataset.filter || "{}");
    let question, body, verb;
    if (sel.matching) {
      const { count, at_least } = await countMatching(filter);
      const described = Object.entries(filter).map(([k, v]) => k + "=" + v).join(", ");
      question = capitalized(action) + " " + (at_least ? "more than " : "") +
        plural(count, "job") + " that match " + described + "?";
      body = { action, filter };
      verb = capitalized(action) + " " + (at_least ? "them" : plural(count, "job"));
    } else {
      question = capitalized(action) + " " + plural(sel.ids.length, "selected job") + "?";
      body = { action, ids: sel.ids };
      verb = capitalized(action) + " " + plural(sel.ids.length, "job");
    }
    if (!(await confirmAction(question, action !== "retry", verb))) return;
    const report = await post("/api/v1/jobs/actions", body);
    toast(`${action}: ${plural(report.changed, "job")} changed` +
      (report.unchanged ? `, ${report.unchanged.toLocaleString()} left as they were` : ""));
    for (const box of document.querySelectorAll("input.pick")) box.checked = false;
    const all = document.getElementById("select-matching");
    if (all) all.checked = false;
    updateSelection();
  }

  document.addEventListener("change", (event) => {
    const target = event.target;
    if (target.id === "select-page") {
      for (const box of document.querySelectorAll("input.pick")) box.checked = target.checked;
    }
    if (target.matches("input.pick, #select-page, #select-matching")) updateSelection();
  });

  document.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-post], button[data-bulk]");
    if (!button) return;
    event.preventDefault();
    button.disabled = true;
    try {
      if (button.dataset.bulk) {
        await bulk(button.dataset.bulk);
      } else {
        const label = button.textContent.trim();
        if (await confirmAction(button.dataset.confirm, button.classList.contains("danger"), label)) {
          // A job action answers what it did ("requested" for a running job's cancel, which
          // the job's handler has yet to act on), and the state it left the job in.
          const answer = (await post(button.dataset.post)).result;
          toast(label + ": " + (answer && answer.result
            ? answer.result.replace(/_/g, " ") + (answer.state ? " (now " + answer.state + ")" : "") +
              (answer.reason ? ": " + answer.reason : "")
            : "done"));
        }
      }
      await refresh();
    } catch (err) {
      toast(err.message, true);
    } finally {
      button.disabled = false;
      updateSelection();
    }
  });

  document.addEventListener("DOMContentLoaded", updateSelection);
})();
