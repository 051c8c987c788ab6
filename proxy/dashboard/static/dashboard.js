/* BluesMinds dashboard: writes go to the JSON API with fetch (which is what the
   API's CSRF check asks of a browser), charts are drawn from the tables beside them,
   and the admin page's health cells (per server and per region) refresh themselves. No inline script anywhere. */
(function () {
  "use strict";

  function all(selector, root) { return Array.prototype.slice.call((root || document).querySelectorAll(selector)); }

  function toast(message) {
    var box = document.querySelector("[data-toast]");
    if (!box) { return; }
    box.textContent = message;
    box.classList.add("shown");
    window.clearTimeout(box._timer);
    box._timer = window.setTimeout(function () { box.classList.remove("shown"); }, 4000);
  }

  function ApiError(message, status) { this.message = message; this.status = status; }

  function send(method, url, body) {
    return fetch(url, {
      method: method,
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json" },
      body: JSON.stringify(body || {})
    }).then(function (response) {
      return response.text().then(function (text) {
        var data = null;
        try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
        if (!response.ok) {
          var message = data && data.error && data.error.message ? data.error.message
            : "The server answered " + response.status + "; try again.";
          throw new ApiError(message, response.status);
        }
        return data;
      });
    }, function () {
      throw new ApiError("The gateway could not be reached; check your connection and try again.", 0);
    });
  }

  function setPath(target, path, value) {
    var parts = path.split(".");
    for (var i = 0; i < parts.length - 1; i++) {
      target = target[parts[i]] = target[parts[i]] || {};
    }
    target[parts[parts.length - 1]] = value;
  }

  function fieldValue(el) {
    if (el.tagName === "SELECT" && el.multiple) {
      var picked = Array.prototype.map.call(el.selectedOptions, function (o) { return o.value; });
      return picked.length ? picked : undefined;
    }
    var raw = el.value;
    if (raw === "" ) { return undefined; }
    switch (el.dataset.type) {
      case "int": return parseInt(raw, 10);
      case "number": return parseFloat(raw);
      case "date": return Math.floor(Date.parse(raw + "T23:59:59Z") / 1000);  // through that whole day, UTC
      default: return raw;
    }
  }

  function formBody(form) {
    var body = {};
    all("input, select, textarea", form).forEach(function (el) {
      if (!el.name || el.disabled || el.type === "submit" || el.type === "button") { return; }
      var value = fieldValue(el);
      if (value !== undefined) { setPath(body, el.name, value); }
    });
    return body;
  }

  function showError(form, error) {
    if (error.status === 401) { window.location.assign("/dashboard/login"); return; }
    var box = form && form.querySelector("[data-error]");
    if (box) { box.textContent = error.message; } else { toast(error.message); }
  }

  function clearError(form) {
    var box = form.querySelector("[data-error]");
    if (box) { box.textContent = ""; }
  }

  function showSecret(data) {
    var panel = document.querySelector("[data-secret-panel]");
    var input = panel.querySelector("[data-secret-value]");
    // An API key's secret is "key", a webhook's signing secret is "secret".
    input.value = data[panel.dataset.secretField || "key"];
    panel.hidden = false;
    panel.scrollIntoView({ block: "start" });
    input.focus();
    input.select();
  }

  function afterSuccess(action, data, message) {
    action = action || "reload";
    if (action === "secret") { showSecret(data); return; }
    if (action.indexOf("redirect:") === 0) { window.location.assign(action.slice(9)); return; }
    // To an address the API answered with, such as a checkout page (only http(s), never javascript:).
    if (action.indexOf("follow:") === 0) {
      var target = String(data[action.slice(7)] || "");
      if (/^https?:\/\//.test(target)) { window.location.assign(target); return; }
      toast("The server did not give an address to go to; try again.");
      return;
    }
    if (message) { window.sessionStorage.setItem("bm-toast", message); }
    window.location.reload();
  }

  function busy(button, on) {
    if (!button) { return; }
    button.disabled = on;
    button.setAttribute("aria-busy", on ? "true" : "false");
  }

  // -- forms and buttons that call the API ---------------------------------------------

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.hasAttribute("data-api-form")) {
      event.preventDefault();
      var button = form.querySelector("button[type=submit]");
      clearError(form);
      busy(button, true);
      send(form.dataset.method, form.dataset.url, formBody(form)).then(function (data) {
        busy(button, false);
        afterSuccess(form.dataset.onSuccess, data, form.dataset.done);
      }, function (error) { busy(button, false); showError(form, error); });
    } else if (form.hasAttribute("data-login")) {
      event.preventDefault();
      clearError(form);
      logIn(form, form.elements.email.value, form.elements.password.value, form.dataset.next)
        .catch(function () { /* shown in the form */ });
    } else if (form.hasAttribute("data-signup")) {
      event.preventDefault();
      clearError(form);
      signUp(form);
    }
  });

  document.addEventListener("click", function (event) {
    var button = event.target.closest("button");
    if (!button) { return; }
    if (button.hasAttribute("data-api-method")) {
      if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) { return; }
      busy(button, true);
      var body = button.dataset.body ? JSON.parse(button.dataset.body) : {};
      send(button.dataset.apiMethod, button.dataset.apiUrl, body).then(function (data) {
        afterSuccess(button.dataset.onSuccess, data, button.dataset.done);
      }, function (error) { busy(button, false); showError(button.closest("form"), error); });
    } else if (button.hasAttribute("data-logout")) {
      send("POST", "/api/auth/logout", {}).then(function () {
        window.location.assign("/dashboard/login");
      }, function () { window.location.assign("/dashboard/login"); });
    } else if (button.hasAttribute("data-copy")) {
      var source = document.querySelector(button.dataset.copy);
      source.select();
      var done = function () { toast("Copied to the clipboard."); };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(source.value).then(done, function () { document.execCommand("copy"); done(); });
      } else { document.execCommand("copy"); done(); }
    } else if (button.hasAttribute("data-reload")) {
      window.location.assign(window.location.pathname);
    }
  });

  function logIn(form, email, password, next) {
    var button = form.querySelector("button[type=submit]");
    busy(button, true);
    return send("POST", "/api/auth/login", { email: email, password: password }).then(function () {
      window.location.assign(next || "/dashboard");
    }, function (error) { busy(button, false); showError(form, error); throw error; });
  }

  function signUp(form) {
    var body = formBody(form);
    var button = form.querySelector("button[type=submit]");
    busy(button, true);
    send("POST", "/api/auth/signup", body).then(function () {
      // Signup answers the same whether or not the address was taken, so log in to find out.
      return logIn(form, body.email, body.password, "/dashboard").catch(function () {
        var box = form.querySelector("[data-error]");
        box.textContent = "Signup received. Log in with your e-mail address and password.";
      });
    }, function (error) { busy(button, false); showError(form, error); });
  }

  // -- charts: drawn from the table in the same figure -------------------------------------

  var SERIES = {
    requests: { column: 1, label: "Requests", stroke: "#4f46e5", fill: "rgba(79, 70, 229, 0.10)", scale: "requests" },
    total_tokens: { column: 2, label: "Tokens", stroke: "#0891b2", fill: "rgba(8, 145, 178, 0.0)", scale: "tokens" },
    cost_usd: { column: 3, label: "Cost (USD)", stroke: "#16a34a", scale: "cost" },
    errors: { column: 4, label: "Errors", stroke: "#dc2626", scale: "requests" }
  };

  function drawChart(figure) {
    if (typeof window.uPlot !== "function") { return; }
    var table = document.getElementById(figure.dataset.chart);
    var names = table.dataset.series.split(",");
    var rows = all("tbody tr", table);
    var data = [rows.map(function (tr) { return Date.parse(tr.cells[0].dataset.value + "T00:00:00Z") / 1000; })];
    var series = [{}];
    var axes = [{ stroke: "#64748b", grid: { stroke: "#eef2f7" } }];
    names.forEach(function (name, i) {
      var spec = SERIES[name];
      data.push(rows.map(function (tr) { return parseFloat(tr.cells[spec.column].dataset.value); }));
      series.push({ label: spec.label, stroke: spec.stroke, fill: spec.fill, width: 2, scale: spec.scale,
                    points: { show: rows.length < 40 } });
      axes.push({ scale: spec.scale, side: i === 0 ? 3 : 1, stroke: spec.stroke,
                  grid: { show: i === 0, stroke: "#eef2f7" }, size: 60 });
    });
    var holder = figure.querySelector(".chart-canvas");
    holder.textContent = "";
    var width = Math.max(260, holder.clientWidth);
    var plot = new window.uPlot({
      width: width, height: width < 500 ? 200 : 260, series: series, axes: axes,
      scales: { x: { time: true } }, legend: { live: true }, cursor: { drag: { x: false, y: false } }
    }, data, holder);
    var timer = null;
    window.addEventListener("resize", function () {
      window.clearTimeout(timer);
      timer = window.setTimeout(function () {
        var w = Math.max(260, holder.clientWidth);
        plot.setSize({ width: w, height: w < 500 ? 200 : 260 });
      }, 150);
    });
  }

  // -- admin: live health --------------------------------------------------------------------

  function pollHealth(table) {
    var label = document.querySelector("[data-health-updated]");
    function format(field, value) {
      if (value === null || value === undefined) { return "—"; }
      if (field === "latency_ewma_ms") { return value >= 10 ? Math.round(value).toLocaleString("en-US") + " ms" : value.toFixed(1) + " ms"; }
      if (typeof value === "number") { return value.toLocaleString("en-US"); }
      return String(value);
    }
    function refresh() {
      if (document.hidden) { return; }
      fetch(table.dataset.healthPoll, { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (body) {
          if (!body) { return; }
          body.data.forEach(function (row) {
            var tr = table.querySelector('tr[data-server="' + CSS.escape(row.name) + '"]');
            if (!tr) { return; }
            all("[data-field]", tr).forEach(function (cell) {
              var field = cell.dataset.field;
              cell.textContent = format(field, row[field]);
              if (field === "state") { cell.className = "badge " + row.state; }
            });
          });
          (body.regions ? body.regions.regions : []).forEach(function (region) {
            var tr = document.querySelector('#regions-table tr[data-region="' + CSS.escape(region.region) + '"]');
            if (!tr) { return; }
            var count = tr.querySelector('[data-region-field="healthy_count"]');
            count.textContent = String(region.healthy_count);
            count.className = "badge " + (region.healthy_count === region.total ? "healthy"
              : region.healthy_count === 0 ? "down" : "degraded");
            tr.querySelector('[data-region-field="total"]').textContent = String(region.total);
            tr.querySelector('[data-region-field="healthy"]').textContent = region.healthy.join(", ") || "none";
          });
          if (label) { label.textContent = "live · updated " + new Date().toISOString().slice(11, 19) + " UTC"; }
        }, function () { if (label) { label.textContent = "live updates paused: the gateway did not answer"; } });
    }
    window.setInterval(refresh, 5000);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var pending = window.sessionStorage.getItem("bm-toast");
    if (pending) { window.sessionStorage.removeItem("bm-toast"); toast(pending); }
    all("figure[data-chart]").forEach(drawChart);
    all("[data-health-poll]").forEach(pollHealth);
  });
}());
