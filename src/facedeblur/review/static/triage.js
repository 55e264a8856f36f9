// The job page's track view (sort, hide) applies as soon as a choice changes; without scripts the Show
// button does the same.
(function () {
  'use strict';
  document.addEventListener('DOMContentLoaded', function () {
    var form = document.getElementById('track-view');
    if (!form) return;
    form.addEventListener('change', function () { form.submit(); });
  });
}());
