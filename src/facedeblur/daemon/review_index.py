"""OUTBOX/index.html: every published job's gallery, newest first. Plain HTML and inline CSS (works offline).

Rebuilt from the journal after each job and each retention pass, and written atomically, so a browser
refreshing during an update sees the old page or the new one, never half of one.
"""
from __future__ import annotations

import html
import time
from pathlib import Path
from urllib.parse import quote

from ..image_files import write_bytes_atomic
from ..safe_text import display_name
from .journal import Journal

STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em;background:#fafafa;color:#222}
table{border-collapse:collapse;width:100%}th,td{padding:.35em .6em;border-bottom:1px solid #ddd;text-align:left}
th{background:#eee}td.n{text-align:right}a{color:#0645ad}img{height:48px;vertical-align:middle;margin-right:2px}"""


def _thumbnails(folder: Path, limit: int = 4) -> list[Path]:
    faces = folder / "faces"
    try:
        found = sorted(p for p in faces.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))
    except OSError:
        return []
    # The gallery's before/after pairs say the most at a glance; any face image otherwise.
    pairs = [p for p in found if "side-by-side" in p.name]
    return (pairs or found)[:limit]


def write_review_index(journal: Journal, outbox: Path) -> Path:
    rows = []
    for job in journal.published():
        folder = Path(job["output"])
        if not folder.is_dir():
            continue
        link = quote(folder.name) + "/index.html"
        thumbs = "".join(f'<img src="{quote(folder.name)}/{quote(t.relative_to(folder).as_posix())}" alt="">'
                         for t in _thumbnails(folder))
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job["finished_at"]))
        rows.append(
            f'<tr><td>{when}</td><td><a href="{link}">{html.escape(display_name(job["rel_path"]))}</a></td>'
            f'<td class="n">{job["frames"] if job["frames"] is not None else ""}</td>'
            f'<td class="n">{job["tracks"] if job["tracks"] is not None else ""}</td>'
            f'<td class="n">{job["faces"] if job["faces"] is not None else ""}</td>'
            f'<td>{thumbs}</td></tr>')
    body = "\n".join(rows) or '<tr><td colspan="6">Nothing processed yet.</td></tr>'
    page = (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>facedeblur review</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head>'
            f'<body><h1>facedeblur review</h1><p>{len(rows)} processed inputs, newest first. '
            f'Updated {time.strftime("%Y-%m-%d %H:%M:%S")}.</p>'
            f'<table><thead><tr><th>Finished</th><th>Input</th><th>Frames</th><th>People</th><th>Faces restored</th><th>Faces found</th>'
            f'</tr></thead><tbody>\n{body}\n</tbody></table></body></html>\n')
    target = outbox / "index.html"
    write_bytes_atomic(target, page.encode("utf-8"))
    return target
