"""Stage 10, gallery: OUTDIR/faces/<track-id>/ images and OUTDIR/index.html.

The page is one static file with inline CSS and script and relative links only, so it works from
file:// on a machine with no network (no CDN, no fonts to fetch).
"""
from __future__ import annotations

import html
from importlib import resources
from pathlib import Path
from string import Template

import cv2
import numpy as np

from ..ai_label import EDGE_ENERGY_NOTE
from ..image_files import write_image_atomic

DISPLAY_SCALE = 2  # gallery crops are shown enlarged; nearest-neighbour, so no pixel is invented for display


def _labelled(image: np.ndarray, label: str) -> np.ndarray:
    band = np.full((22, image.shape[1], 3), 32, np.uint8)
    cv2.putText(band, label, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return np.vstack([image, band])


def _side_by_side(original: np.ndarray, restored: np.ndarray) -> np.ndarray:
    big = lambda image: cv2.resize(image, None, fx=DISPLAY_SCALE, fy=DISPLAY_SCALE, interpolation=cv2.INTER_NEAREST)
    return np.hstack([_labelled(big(original), "original"), np.full((big(original).shape[0] + 22, 4, 3), 255, np.uint8),
                      _labelled(big(restored), "AI-restored")])


def _save(faces_dir: Path, track_id: int, stem: str, images: dict[str, np.ndarray]) -> dict:
    folder = faces_dir / str(track_id)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key, image in images.items():
        name = f"{stem}-{key.replace('_', '-')}.png"
        write_image_atomic(folder / name, image)
        paths[key] = f"faces/{track_id}/{name}"
    return paths


def save_best_frame(faces_dir: Path, track_id: int, frame_index: int, original: np.ndarray,
                    restored: np.ndarray) -> dict:
    """Write original crop, restored crop and a labelled side-by-side; returns their OUTDIR-relative paths."""
    return _save(faces_dir, track_id, f"frame-{frame_index:06d}",
                 {"original": original, "restored": restored, "side_by_side": _side_by_side(original, restored)})


def save_portrait(faces_dir: Path, track_id: int, original: np.ndarray, merged: np.ndarray,
                  restored: np.ndarray) -> dict:
    """Write a track's portrait: the reference frame's crop as recorded, the merged crop the model saw, the
    restored portrait and a side-by-side of the first and last; returns their OUTDIR-relative paths."""
    return _save(faces_dir, track_id, "portrait", {"original": original, "merged": merged, "restored": restored,
                                                   "side_by_side": _side_by_side(original, restored)})


def _time_text(seconds: float | None) -> str:
    if seconds is None:
        return ""
    minutes, rest = divmod(max(0.0, seconds), 60)
    return f"{int(minutes)}:{rest:05.2f}"


def _card(track: dict, clip_links: list[tuple[str, str]]) -> str:
    # The portrait (merged from the track's best frames, restored once) comes first, then the best frames.
    portrait = track.get("portrait")
    shown = ([{**portrait, "title": f"portrait: {len(portrait['frames_merged'])} frame(s) merged around frame "
                                    f"{portrait['frame']}", "kind": "portrait"}] if portrait else [])
    shown += [{**b, "title": f"frame {b['frame']}", "kind": "frame"} for b in track["best_frames"]]
    first = shown[0]
    esc = lambda value: html.escape(str(value), quote=True)
    thumbs = "".join(
        f'<button type="button" class="thumb {b["kind"]}" data-original="{esc(b["original"])}" '
        f'data-restored="{esc(b["restored"])}" title="{esc(b["title"])}"><img src="{esc(b["restored"])}" '
        f'alt="{esc(b["title"])}"></button>'
        for b in shown)
    times = track["photo"] if "photo" in track else \
        f'{_time_text(track.get("start_time"))} - {_time_text(track.get("end_time"))}'
    links = " ".join(f'<a href="{esc(href)}">{esc(label)}</a>' for label, href in clip_links)
    before, after = track["sharpness_before_mean"], track["sharpness_after_mean"]
    portrait_note = (f'\n  <p class="portrait-note">First: the portrait, {len(portrait["frames_merged"])} frame(s) merged '
                     f'around frame {portrait["frame"]} and restored once.</p>' if portrait else "")
    return f"""
<article class="card" data-track="{track['id']}">
  <h2>Track #{track['id']}</h2>
  <p class="meta">{esc(times)} &middot; frames {track['first_frame']}&ndash;{track['last_frame']} &middot;
  {len(track['frames'])} restored faces &middot;
  <span class="edge-energy" title="{esc(EDGE_ENERGY_NOTE)}">edge energy: original {before:.0f}, restored {after:.0f}</span></p>
  <div class="compare">
    <img class="after" src="{esc(first['restored'])}" alt="AI-restored face, track {track['id']}">
    <img class="before" src="{esc(first['original'])}" alt="original face, track {track['id']}" style="clip-path: inset(0 50% 0 0)">
    <span class="divider" style="left: 50%"></span>
    <span class="tag left">original</span><span class="tag right">AI-restored</span>
  </div>
  <input class="slider" type="range" min="0" max="100" value="50" aria-label="original / restored split">
  <button type="button" class="toggle">show original</button>
  <div class="thumbs">{thumbs}</div>{portrait_note}
  <p class="links">{links} &middot; <a href="{esc(first['side_by_side'])}">side by side</a></p>
</article>"""


def write_gallery(outdir: Path, manifest: dict, clip_links_for) -> None:
    template = Template(resources.files("facedeblur.footage").joinpath("gallery.html").read_text(encoding="utf-8"))
    tracks = [t for t in manifest["tracks"] if t["best_frames"]]
    cards = "".join(_card(t, clip_links_for(t)) for t in tracks)
    if not cards:
        cards = '<p class="empty">No faces were found in this footage, so nothing was restored.</p>'
    source = manifest["input"]
    summary = ((f"{source['frames']} separate photo(s)" if source["kind"] == "photos" else
                f"{source['frames']} frame(s), {source['width']}x{source['height']}")
               + (f", {source['fps']:.2f} fps" if source.get("fps") else "")
               + f" &middot; {len(tracks)} track(s) &middot; model {html.escape(manifest['model']['name'])} "
               f"{html.escape(manifest['model']['version'])}")
    page = template.substitute(title=html.escape(f"facedeblur: {source['name']}"), summary=summary, cards=cards,
                               notice=html.escape(manifest["notice"]), edge_note=html.escape(EDGE_ENERGY_NOTE))
    (outdir / "index.html").write_text(page, encoding="utf-8")
