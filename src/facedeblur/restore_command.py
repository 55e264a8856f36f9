"""`facedeblur restore`: restore every face in photos (or whole aligned face crops) into OUTDIR/<stem>.png.

With --recursive, folders are searched through their subfolders and the outputs mirror them:
DIR/a/b/photo.jpg -> OUTDIR/a/b/photo.png. Each output carries the AI-restored label in its metadata.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .defaults import (DEFAULT_LARGE_FACES, DEFAULT_SCORE_THRESHOLD, LARGE_FACE_MODES, PROVIDER_CHOICES,
                       packaged_models_help)
from .errors import FacedeblurError
from .image_files import is_image_path, prepare_output_dir

IMAGE_KINDS = "png, jpg, webp, bmp, tiff"


@dataclass(frozen=True)
class ImageJob:
    source: Path
    target: Path   # relative to OUTDIR: <stem>.png, or sub/folders/<stem>.png for an image found by --recursive


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("restore", help="restore faces in images",
                                   description="Restore every face in each image; writes OUTDIR/<stem>.png at the "
                                               "input's size, labelled as AI-restored in its metadata.")
    add_arguments(parser)
    parser.set_defaults(handler=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files and/or folders of images")
    parser.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="folder for the restored images")
    parser.add_argument("-r", "--recursive", action="store_true",
                        help="also restore the images in the folders' subfolders; OUTDIR mirrors their layout "
                             "(symbolic links to folders and hidden folders are not entered)")
    parser.add_argument("--aligned", action="store_true",
                        help="each input is one roughly centred face crop; restore the whole crop")
    parser.add_argument("--model", metavar="MODEL", help=f"restorer: {packaged_models_help()}, or an .onnx file")
    parser.add_argument("--provider", choices=PROVIDER_CHOICES, default="auto")
    parser.add_argument("--flip-average", action="store_true",
                        help="restore each face and its mirror image and average the two (about 0.1 dB better, "
                             "twice the restorer's time)")
    parser.add_argument("--score-threshold", type=float, default=DEFAULT_SCORE_THRESHOLD, help="face detector confidence")
    parser.add_argument("--large-faces", choices=LARGE_FACE_MODES, default=DEFAULT_LARGE_FACES,
                        help="faces larger than the model's working size: add the model's correction to the native "
                             "pixels (adaptive, the default, or correction), run the network at native size "
                             "(native), or shrink and enlarge (resize)")


def _images_below(folder: Path, skip: Path | None) -> list[ImageJob]:
    """Every image under `folder`, sorted, with its output path mirroring its place below `folder`. Symbolic
    links to folders are not entered (a loop, or a way out of the tree), nor hidden folders, nor `skip` (an
    output folder inside the input would otherwise be read back on the next run)."""
    jobs = []
    for top, folders, files in os.walk(folder, followlinks=False):
        here = Path(top)
        folders[:] = sorted(name for name in folders
                            if not name.startswith(".") and (skip is None or (here / name).resolve() != skip))
        relative = here.relative_to(folder)
        for name in sorted(files):
            path = here / name
            if not name.startswith(".") and path.is_file() and is_image_path(path):
                jobs.append(ImageJob(path, relative / f"{path.stem}.png"))
    return jobs


def _images_in(folder: Path) -> list[ImageJob]:
    return [ImageJob(p, Path(f"{p.stem}.png")) for p in sorted(folder.iterdir()) if p.is_file() and is_image_path(p)]


def _has_subfolders(folder: Path) -> bool:
    try:
        return any(p.is_dir() and not p.name.startswith(".") for p in folder.iterdir())
    except OSError:
        return False


def collect_images(inputs: list[str], recursive: bool = False,
                   output: Path | None = None) -> tuple[list[ImageJob], list[str]]:
    """Expand folders (sorted; into subfolders with `recursive`); returns the images and the problems found."""
    jobs: list[ImageJob] = []
    problems: list[str] = []
    skip = output.resolve() if output is not None else None
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            try:
                found = _images_below(path, skip) if recursive else _images_in(path)
            except PermissionError:
                problems.append(f"{path}: folder not readable; fix its permissions")
                continue
            if not found:
                hint = ("; pass --recursive to look into its subfolders"
                        if not recursive and _has_subfolders(path) else "")
                where = "folder and its subfolders have" if recursive else "folder has"
                problems.append(f"{path}: {where} no images ({IMAGE_KINDS}){hint}")
            jobs.extend(found)
        elif path.exists():
            jobs.append(ImageJob(path, Path(f"{path.stem}.png")))
        else:
            problems.append(f"{path}: not found; check the path")
    return jobs, problems


def check_no_overwrite(inputs: list[str], jobs: list[ImageJob], output: Path) -> None:
    """`restore` never overwrites its input: refuse -o naming an input folder, or any output that is an input
    (same resolved path or the same file through a link), before anything is loaded or written."""
    resolved_output = output.resolve()
    for raw in inputs:
        path = Path(raw)
        if path.is_dir() and path.resolve() == resolved_output:
            raise FacedeblurError(f"-o {output} is the input folder {path}: the restored images would replace the "
                                  "originals; choose another output folder")
    for job in jobs:
        target = output / job.target
        same = target.resolve() == job.source.resolve()
        if not same and os.path.lexists(target):
            try:
                same = os.path.samefile(target, job.source)
            except OSError:
                same = False
        if same:
            raise FacedeblurError(f"{target} is the input {job.source}: writing it would replace the original; "
                                  "choose another output folder")


def output_path(output: Path, relative: Path) -> Path:
    """OUTDIR/relative, creating its subfolders; never through a symbolic link (one planted in OUTDIR must not
    send a restored image outside it)."""
    folder = output
    for part in relative.parent.parts:
        folder = folder / part
        if folder.is_symlink():
            raise FacedeblurError(f"{folder} is a symbolic link; restore writes only into real folders under -o")
        try:
            folder.mkdir(exist_ok=True)
        except FileExistsError:
            raise FacedeblurError(f"{folder} exists and is not a folder; move it or choose another -o") from None
    return output / relative


def main_restore(inputs: list[str], output: Path, *options: str) -> int:
    """The restore command as a function (used by `facedeblur demo`): `options` are its command-line options
    (`--aligned`, `--large-faces native`, ...), parsed by the command's own parser, so every default is its."""
    parser = argparse.ArgumentParser(prog="facedeblur restore")
    add_arguments(parser)
    return run(parser.parse_args([*options, "-o", str(output), "--", *inputs]))  # "--": an input may start with "-"


@dataclass
class Tally:
    written: int = 0
    failed: int = 0
    no_face: int = 0
    faces: int = 0


def run(args: argparse.Namespace) -> int:
    from .pipeline.detect import FaceDetector
    from .pipeline.restore import FaceRestorer
    from .safe_text import display_name

    output = Path(args.output)
    jobs, problems = collect_images(args.inputs, getattr(args, "recursive", False), output)
    for problem in problems:
        print(f"facedeblur: error: {display_name(problem)}", file=sys.stderr)
    if not jobs and problems:
        return 2
    check_no_overwrite(args.inputs, jobs, output)
    # Models first: a bad --model must fail before the output folder is created (no partial output).
    restorer = FaceRestorer(args.model, provider=args.provider, flip_average=args.flip_average)
    detector = None if args.aligned else FaceDetector(score_threshold=args.score_threshold, provider=args.provider)
    prepare_output_dir(output)
    started = time.perf_counter()
    tally = restore_all(jobs, output, restorer, detector, args)
    tally.failed += len(problems)
    elapsed = time.perf_counter() - started
    print(f"restored {tally.faces} face(s) in {tally.written} image(s), {tally.no_face} without a face, "
          f"{tally.failed} failed -> {display_name(output)} ({elapsed:.2f}s, model {restorer.info.name} "
          f"{restorer.info.version}, {restorer.providers[0]})")
    return 1 if tally.failed else 0


def restore_all(jobs: list[ImageJob], output: Path, restorer, detector, args: argparse.Namespace) -> Tally:
    """Restore and write each image; one image's failure is reported and counted, and the rest go on. A
    progress bar shows on a terminal when there is more than one image (tqdm's messages keep it intact)."""
    from tqdm import tqdm

    from .ai_label import restored_label
    from .image_files import read_image, write_image_atomic
    from .pipeline.face_crops import restore_any_size_crop
    from .pipeline.restore_image import restore_faces_in_image
    from .safe_text import display_name

    label = restored_label(restorer.info.name, restorer.info.version)
    tally = Tally()
    sources: dict[Path, Path] = {}
    progress = tqdm(jobs, unit="image", desc="restoring", file=sys.stderr, disable=None if len(jobs) > 1 else True)
    for job in progress:
        if job.target in sources:
            progress.write(f"facedeblur: error: {display_name(job.source)}: same output name as "
                           f"{display_name(sources[job.target])}; both would write {display_name(job.target)}",
                           file=sys.stderr)
            tally.failed += 1
            continue
        sources[job.target] = job.source
        try:
            image = read_image(job.source)
            if args.aligned:
                result, faces = restore_any_size_crop(restorer, image, args.large_faces), 1
            else:
                result, restored = restore_faces_in_image(image, detector, restorer, large_faces=args.large_faces)
                faces = len(restored)
                if not faces:
                    tally.no_face += 1
                    progress.write(f"{display_name(job.source)}: no face found; written unchanged", file=sys.stderr)
            write_image_atomic(output_path(output, job.target), result, label if faces else None)
            tally.faces += faces
            tally.written += 1
        except FacedeblurError as exc:
            progress.write(f"facedeblur: error: {display_name(exc)}", file=sys.stderr)
            tally.failed += 1
    progress.close()
    return tally
