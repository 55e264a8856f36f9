// Keeps the jobs list, and the page of a queued or running job, current without reloading the page: the page
// is fetched again every data-refresh-seconds and only what changed is swapped in, so the scroll position,
// a text selection, the filter form being typed in and thumbnails already loaded all stay.
(function () {
  'use strict';

  function selectionInside(element) {
    var selection = window.getSelection();
    return selection && !selection.isCollapsed && element.contains(selection.anchorNode);
  }

  function fetchPage(done) {
    fetch(window.location.href, {credentials: 'same-origin', headers: {'Accept': 'text/html'}})
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) { if (html) done(new DOMParser().parseFromString(html, 'text/html')); })
      .catch(function () { /* the server restarting or the network away: try again next time */ });
  }

  function every(seconds, refresh) {
    if (!(seconds > 0)) return;
    (function tick() {
      window.setTimeout(function () { refresh(); tick(); }, seconds * 1000);
    }());
  }

  // The row nearest the top of the window, and where it is: after the swap the window is moved by as much as
  // that row moved (new jobs arrive at the top of a newest-first list).
  function anchorRow(body) {
    var rows = body.rows;
    for (var i = 0; i < rows.length; i++) {
      var box = rows[i].getBoundingClientRect();
      if (box.bottom > 0) return {job: rows[i].dataset.job, top: box.top};
    }
    return null;
  }

  function refreshList(table) {
    if (document.hidden || selectionInside(table)) return;
    fetchPage(function (page) {
      var fresh = page.getElementById('jobs');
      if (!fresh || selectionInside(table)) return;
      var body = table.tBodies[0];
      var anchor = anchorRow(body);
      var current = {};
      Array.prototype.forEach.call(body.rows, function (row) { if (row.dataset.job) current[row.dataset.job] = row; });
      var rows = Array.prototype.map.call(fresh.tBodies[0].rows, function (row) {
        var kept = current[row.dataset.job];
        return kept && kept.outerHTML === row.outerHTML ? kept : document.importNode(row, true);
      });
      var changed = rows.length !== body.rows.length || rows.some(function (row, i) { return row !== body.rows[i]; });
      if (changed) {
        while (body.firstChild) body.removeChild(body.firstChild);
        rows.forEach(function (row) { body.appendChild(row); });
        if (anchor) {
          var moved = body.querySelector('tr[data-job="' + anchor.job + '"]');
          if (moved) window.scrollBy(0, moved.getBoundingClientRect().top - anchor.top);
        }
      }
      ['job-count', 'pages'].forEach(function (id) {
        var mine = document.getElementById(id), theirs = page.getElementById(id);
        if (mine && theirs && mine.innerHTML !== theirs.innerHTML) mine.innerHTML = theirs.innerHTML;
      });
      table.dataset.refreshedAt = String(Date.now());
    });
  }

  function refreshJob(line) {
    if (document.hidden) return;
    fetchPage(function (page) {
      var fresh = page.getElementById('job-state');
      if (!fresh) return;
      if (fresh.dataset.state !== line.dataset.state) {
        window.location.reload();   // done or failed now: the outputs and tracks appear
        return;
      }
      if (fresh.innerHTML !== line.innerHTML) line.innerHTML = fresh.innerHTML;
      line.dataset.refreshedAt = String(Date.now());
    });
  }

  document.addEventListener('DOMContentLoaded', function () {
    var table = document.getElementById('jobs');
    if (table) every(Number(table.dataset.refreshSeconds), function () { refreshList(table); });
    var line = document.getElementById('job-state');
    if (line) every(Number(line.dataset.refreshSeconds), function () { refreshJob(line); });
  });
}());
