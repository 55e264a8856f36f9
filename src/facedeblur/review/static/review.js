// The review pages' only script, served from the app itself (the CSP forbids inline scripts).
(function () {
  'use strict';
  // The slider reveals the original from the left: 100 = all original, 0 = all restored.
  function setSplit(track, value) {
    track.querySelector('img.before').style.clipPath = 'inset(0 ' + (100 - value) + '% 0 0)';
    track.querySelector('.divider').style.left = value + '%';
  }

  function seek(seconds) {
    // The synchronised player (original beside restored) listens for this and moves both its clips.
    document.dispatchEvent(new CustomEvent('facedeblur:seek', {detail: Number(seconds)}));
    var video = document.getElementById('video-annotated') || document.getElementById('video-restored');
    if (!video) return;
    video.currentTime = Number(seconds);
    (document.getElementById('player') || video).scrollIntoView({block: 'center'});
  }

  // The face crops at their full size in a dialog: the page shows them at 256 px.
  var ZOOM_SIZE = 512;
  function zoom(track) {
    var dialog = document.getElementById('zoom');
    var before = track.querySelector('img.before'), after = track.querySelector('img.after');
    if (!dialog || !before || !after) return;
    // The images are made here, not in the page: an <img> without a source would be a broken image.
    [['zoom-original', before, 'original crop at full size', 'original crop'],
     ['zoom-restored', after, 'AI-restored face at full size', 'AI-restored']]
      .forEach(function (part) {
        var box = document.getElementById(part[0]);
        var image = box.querySelector('img') || box.insertBefore(document.createElement('img'), box.firstChild);
        // Every source pixel as a block of whole screen pixels (pixelated, nothing interpolated): a 512 px crop
        // at 1:1, a smaller one enlarged by the largest whole factor that keeps it within 512 px.
        image.onload = function () {
          var factor = Math.max(1, Math.floor(ZOOM_SIZE / image.naturalWidth));
          image.style.width = (image.naturalWidth * factor) + 'px';
          image.dataset.factor = factor;
          box.querySelector('figcaption').textContent = part[3] + ', ' + image.naturalWidth + ' px' +
            (factor > 1 ? ' shown at ' + factor + '×' : ' at full size');
        };
        image.src = part[1].src;
        image.alt = part[2];
        if (image.complete && image.naturalWidth) image.onload();   // the same source again fires no load
      });
    if (!dialog.open) dialog.showModal();
  }

  document.addEventListener('DOMContentLoaded', function () {
    document.querySelectorAll('.track').forEach(function (track) {
      var slider = track.querySelector('.slider');
      if (slider) {
        slider.addEventListener('input', function () { setSplit(track, Number(slider.value)); });
      }
      track.querySelectorAll('.thumb').forEach(function (thumb, index) {
        if (index === 0) thumb.classList.add('active');
        thumb.addEventListener('click', function () {
          track.querySelector('img.before').src = thumb.dataset.original;
          track.querySelector('img.after').src = thumb.dataset.restored;
          track.querySelectorAll('.thumb').forEach(function (t) { t.classList.remove('active'); });
          thumb.classList.add('active');
          seek(thumb.dataset.time);
        });
      });
      var compare = track.querySelector('.compare');
      if (compare) compare.addEventListener('click', function () { zoom(track); });
      var zoomButton = track.querySelector('.zoom-open');
      if (zoomButton) zoomButton.addEventListener('click', function () { zoom(track); });
      var jump = track.querySelector('.jump');
      if (jump) jump.addEventListener('click', function () { seek(jump.dataset.time); });
    });
  });

  // The original and the restored clip (or frames) side by side, kept in step: the restored clip leads, the
  // original follows it; frame steps use the clip's frame rate from the manifest.
  function player() {
    var box = document.getElementById('player');
    if (!box) return null;
    var fps = Number(box.dataset.fps) || 25;
    var scrub = document.getElementById('scrub'), label = document.getElementById('player-time');
    var back = document.getElementById('step-back'), forward = document.getElementById('step-forward');
    if (box.classList.contains('frames')) {
      var list = document.getElementById('frame-list');
      var items = Array.from(list.querySelectorAll('li')), index = 0;
      var address = function (role, name) { return list.dataset[role].replace('NAME', encodeURIComponent(name)); };
      var showFrame = function (next) {
        index = Math.max(0, Math.min(items.length - 1, next));
        document.getElementById('frame-original').src = address('original', items[index].textContent);
        document.getElementById('frame-restored').src = address('restored', items[index].textContent);
        scrub.value = index;
        label.textContent = 'frame ' + (index + 1) + ' of ' + items.length + ': ' + items[index].textContent;
      };
      back.addEventListener('click', function () { showFrame(index - 1); });
      forward.addEventListener('click', function () { showFrame(index + 1); });
      scrub.addEventListener('input', function () { showFrame(Number(scrub.value)); });
      return {step: function (n) { showFrame(index + n); }, toggle: function () {},
              seek: function (seconds) { showFrame(Math.round(seconds * fps)); }};
    }
    var lead = document.getElementById('video-restored');
    var videos = Array.from(box.querySelectorAll('video.synced'));
    var followers = videos.filter(function (v) { return v !== lead; });
    var playButton = document.getElementById('play-pause');
    var frameOf = function (t) { return Math.floor(t * fps + 1e-3); };
    var show = function () {
      var t = lead.currentTime;
      label.textContent = 'frame ' + frameOf(t) + ' · ' + t.toFixed(2) + ' s';
      if (lead.duration) scrub.value = Math.round(t / lead.duration * 1000);
    };
    // While playing, a follower more than two frames off is moved (moving it on every tick would stutter);
    // paused, every clip shows the lead's frame exactly.
    var align = function (tolerance) {
      followers.forEach(function (v) {
        if (Math.abs(v.currentTime - lead.currentTime) > tolerance) v.currentTime = lead.currentTime;
      });
    };
    var seekTo = function (t) {
      var end = lead.duration || t;
      t = Math.max(0, Math.min(t, end));
      videos.forEach(function (v) { v.currentTime = t; });
      show();
    };
    var pause = function () { videos.forEach(function (v) { v.pause(); }); align(0); };
    var toggle = function () {
      if (lead.paused) videos.forEach(function (v) { v.play(); });
      else pause();
    };
    var step = function (n) {
      pause();
      seekTo((frameOf(lead.currentTime) + n + 0.5) / fps);   // the middle of the frame: no rounding onto its neighbour
    };
    lead.addEventListener('timeupdate', function () { show(); if (!lead.paused) align(2 / fps); });
    lead.addEventListener('seeked', show);
    lead.addEventListener('play', function () { playButton.textContent = 'pause'; });
    lead.addEventListener('pause', function () { playButton.textContent = 'play'; align(0); });
    lead.addEventListener('ended', pause);
    playButton.addEventListener('click', toggle);
    back.addEventListener('click', function () { step(-1); });
    forward.addEventListener('click', function () { step(1); });
    scrub.addEventListener('input', function () { pause(); seekTo(Number(scrub.value) / 1000 * (lead.duration || 0)); });
    return {step: step, toggle: toggle, seek: function (seconds) { pause(); seekTo(seconds); }};
  }

  // Keyboard shortcuts of the job page (listed in its '?' dialog); never while typing in a form field.
  function keyboard(controls) {
    var tracks = Array.from(document.querySelectorAll('article.track'));
    var current = -1;
    var select = function (next) {
      if (!tracks.length) return;
      current = Math.max(0, Math.min(tracks.length - 1, next));
      tracks.forEach(function (t, i) { t.classList.toggle('current', i === current); });
      tracks[current].scrollIntoView({block: 'center'});
    };
    var mark = function (status) {
      if (current < 0) select(0);
      var form = tracks[current] && tracks[current].querySelector('form.mark');
      if (!form) return;
      form.querySelector('select.mark-status').value = status;
      form.requestSubmit();
    };
    document.addEventListener('keydown', function (event) {
      if (event.ctrlKey || event.metaKey || event.altKey) return;
      var target = event.target;
      if (target.closest && target.closest('input:not([type=range]), textarea, select, [contenteditable]')) return;
      var help = document.getElementById('shortcuts');
      if (document.querySelector('dialog[open]') && event.key !== '?') return;
      var key = event.key;
      if (key === 'j') select(current + 1);
      else if (key === 'k') select(current - 1);
      else if (key === 'r') mark('reviewed');
      else if (key === 'f') mark('flagged');
      else if (key === 'z') { if (current < 0) select(0); if (tracks[current]) zoom(tracks[current]); }
      else if (key === '?' && help) { if (help.open) help.close(); else help.showModal(); }
      else if (controls && key === ' ' && target.tagName !== 'BUTTON') controls.toggle();
      else if (controls && key === ',') controls.step(-1);
      else if (controls && key === '.') controls.step(1);
      else return;
      event.preventDefault();
    });
  }

  document.addEventListener('DOMContentLoaded', function () {
    var controls = player();
    if (controls) document.addEventListener('facedeblur:seek', function (event) { controls.seek(event.detail); });
    if (document.getElementById('job-title')) keyboard(controls);
  });
}());
