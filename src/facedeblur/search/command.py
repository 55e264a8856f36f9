"""`facedeblur search PHOTO --config config.yaml [--json]`: the tracks of every published job ranked by how
much their person looks like the largest face in PHOTO."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from . import DEFAULT_RESULTS


def register(subparsers: argparse._SubParsersAction) -> None:
    search = subparsers.add_parser(
        "search", help="find a person from a photo across every processed job",
        description="Rank the tracks of every job in the daemon's outbox by similarity (SFace cosine, 1 = same "
                    "face; about 0.4 and above is usually the same person) to the largest face in PHOTO. "
                    "See docs/review.md, 'Person search'.")
    search.add_argument("photo", type=Path, metavar="PHOTO", help="a png, jpg, webp, bmp or tiff photo with a face")
    search.add_argument("--config", type=Path, metavar="FILE", help="config.yaml (daemon.outbox and daemon.state)")
    search.add_argument("--outbox", type=Path, metavar="DIR", help="overrides daemon.outbox")
    search.add_argument("--state", type=Path, metavar="DIR", help="overrides daemon.state")
    search.add_argument("--limit", type=int, default=DEFAULT_RESULTS, metavar="N",
                        help=f"how many tracks to list (default {DEFAULT_RESULTS})")
    search.add_argument("--json", action="store_true", help="print one JSON object (for scripts)")
    search.set_defaults(handler=run_search)


def run_search(args: argparse.Namespace) -> int:
    from ..config import daemon_folders, load_config
    from ..errors import FacedeblurError
    from ..image_files import read_file_bytes
    from ..safe_text import display_name
    from .face_index import FaceIndex
    from .photo import MAX_PHOTO_BYTES, PhotoSearcher
    from .sync import refresh_face_index

    if not 1 <= args.limit <= 1000:
        raise FacedeblurError(f"--limit {args.limit} is out of range; give 1 to 1000")
    config = load_config(args.config)
    outbox, state = daemon_folders(config, args.outbox, args.state, "search")
    photo = args.photo
    if not photo.is_file():
        raise FacedeblurError(f"{photo}: no such file; give the path of a photo with a face")
    if photo.stat().st_size > MAX_PHOTO_BYTES:
        raise FacedeblurError(f"{photo}: {photo.stat().st_size / 1e6:.1f} MB is above the "
                              f"{MAX_PHOTO_BYTES // 2**20} MiB limit for a search photo; crop or downscale it")
    face = PhotoSearcher(config.pipeline).face_of(read_file_bytes(photo), str(photo))
    index = refresh_face_index(outbox, state, FaceIndex(state))
    hits = index.search(face.vector, args.limit)
    from ..review.catalog import Catalog
    names = {job["id"]: job["shown_name"] for job in Catalog(outbox, state).published()}
    if args.json:
        print(json.dumps({"photo": str(photo), "faces_found": face.faces_found, "box": face.box,
                          "indexed_tracks": index.size(),
                          "results": [{"rank": rank, **hit.as_dict(), "input": names.get(hit.job_id)}
                                      for rank, hit in enumerate(hits, 1)]}, indent=1))
        return 0
    print(f"{display_name(photo)}: the largest of {face.faces_found} face(s), searched among {index.size()} "
          "track(s)")
    if not hits:
        print("no tracks indexed yet: nothing to compare with")
    for rank, hit in enumerate(hits, 1):
        print(f"{rank:3d}  job {hit.job_id:<6d} track {hit.track_id:<4d} similarity {hit.similarity:6.3f}  "
              f"{names.get(hit.job_id, '')}")
    return 0
