// The review pages' only script, served from the app itself (the CSP forbids inline scripts).
(function () {
  'use strict';
  // The slider reveals the original from the left: 100 = all original, 0 = all restored.
  function setSplit(track, value) {
    track.querySelector('img.before').style.clipPath = 'inset(0 ' + (100 - value) + '% 0 0)';
    track.querySelector('.divider').style.left = value + '%';
  }

  function seek(seconds) {
    var video = document.getElementById('video-annotated') || document.getElementById('video-restored');
    if (!video) return;
    video.currentTime = Number(seconds);
    video.scrollIntoView({block: 'center'});
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
      var jump = track.querySelector('.jump');
      if (jump) jump.addEventListener('click', function () { seek(jump.dataset.time); });
    });
  });
}());
