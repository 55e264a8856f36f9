"""`facedeblur restore`: restore every face in photos (or whole aligned face crops) into OUTDIR/<stem>.png."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from .defaults import DEFAULT_LARGE_FACES, DEFAULT_SCORE_THRESHOLD, LARGE_FACE_MODES, PROVIDER_CHOICES
from .errors import FacedeblurError
from .image_files import is_image_path, prepare_output_dir


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("restore", help="restore faces in images",
                                   description="Restore every face in each image; writes OUTDIR/<stem>.png at the input's size.")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files and/or folders of images")
    parser.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="folder for the restored images")
    parser.add_argument("--aligned", action="store_true",
                        help="each input is one roughly centred face crop; restore the whole crop")
    parser.add_argument("--model", metavar="MODEL",
                        help="restorer: default or quality (shipped in the package), or an .onnx file")
    parser.add_argument("--provider", choices=PROVIDER_CHOICES, default="auto")
    parser.add_argument("--score-threshold", type=float, default=DEFAULT_SCORE_THRESHOLD, help="face detector confidence")
    parser.add_argument("--large-faces", choices=LARGE_FACE_MODES, default=DEFAULT_LARGE_FACES,
                        help="faces larger than the model's working size: add the model's correction to the native "
                             "pixels (adaptive, the default, or correction), run the network at native size "
                             "(native), or shrink and enlarge (resize)")
    parser.set_defaults(handler=run)


def collect_images(inputs: list[str]) -> tuple[list[Path], list[str]]:
    """Expand folders (sorted, not recursive); returns the images and the problems found."""
    images: list[Path] = []
    problems: list[str] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            try:
                found = sorted(p for p in path.iterdir() if p.is_file() and is_image_path(p))
            except PermissionError:
                problems.append(f"{path}: folder not readable; fix its permissions")
                continue
            if not found:
                problems.append(f"{path}: folder has no images (png, jpg, webp, bmp, tiff)")
            images.extend(found)
        elif path.exists():
            images.append(path)
        else:
            problems.append(f"{path}: not found; check the path")
    return images, problems


def check_no_overwrite(inputs: list[str], images: list[Path], output: Path) -> None:
    """`restore` never overwrites its input: refuse -o naming an input folder, or any output that is an input
    (same resolved path or the same file through a link), before anything is loaded or written."""
    resolved_output = output.resolve()
    for raw in inputs:
        path = Path(raw)
        if path.is_dir() and path.resolve() == resolved_output:
            raise FacedeblurError(f"-o {output} is the input folder {path}: the restored images would replace the "
                                  "originals; choose another output folder")
    for path in images:
        target = output / f"{path.stem}.png"
        same = target.resolve() == path.resolve()
        if not same and os.path.lexists(target):
            try:
                same = os.path.samefile(target, path)
            except OSError:
                same = False
        if same:
            raise FacedeblurError(f"{target} is the input {path}: writing it would replace the original; "
                                  "choose another output folder")


def main_restore(inputs: list[str], output: Path, aligned: bool = False, model: str | None = None,
                 provider: str = "auto", score_threshold: float = DEFAULT_SCORE_THRESHOLD, large_faces: str = DEFAULT_LARGE_FACES) -> int:
    """The restore command as a function (used by `facedeblur demo`)."""
    return run(argparse.Namespace(inputs=inputs, output=str(output), aligned=aligned, model=model, provider=provider,
                                  score_threshold=score_threshold, large_faces=large_faces))


def run(args: argparse.Namespace) -> int:
    from .image_files import read_image, write_image_atomic
    from .pipeline.detect import FaceDetector
    from .pipeline.restore import FaceRestorer
    from .pipeline.face_crops import restore_any_size_crop
    from .pipeline.restore_image import restore_faces_in_image
    from .safe_text import display_name

    images, problems = collect_images(args.inputs)
    for problem in problems:
        print(f"facedeblur: error: {display_name(problem)}", file=sys.stderr)
    if not images and problems:
        return 2
    output = Path(args.output)
    check_no_overwrite(args.inputs, images, output)
    # Models first: a bad --model must fail before the output folder is created (no partial output).
    restorer = FaceRestorer(args.model, provider=args.provider)
    detector = None if args.aligned else FaceDetector(score_threshold=args.score_threshold, provider=args.provider)
    prepare_output_dir(output)
    stems: dict[str, Path] = {}
    written = failed = no_face = faces_total = 0
    started = time.perf_counter()
    for path in images:
        target = output / f"{path.stem}.png"
        if path.stem in stems:
            print(f"facedeblur: error: {path}: same name as {stems[path.stem]}; both would write {target.name}",
                  file=sys.stderr)
            failed += 1
            continue
        stems[path.stem] = path
        try:
            image = read_image(path)
            if args.aligned:
                result = restore_any_size_crop(restorer, image, args.large_faces)
                faces = 1
            else:
                result, restored = restore_faces_in_image(image, detector, restorer, large_faces=args.large_faces)
                faces = len(restored)
                if not faces:
                    no_face += 1
                    print(f"{display_name(path)}: no face found; written unchanged", file=sys.stderr)
            write_image_atomic(target, result)
            faces_total += faces
            written += 1
        except FacedeblurError as exc:
            print(f"facedeblur: error: {display_name(exc)}", file=sys.stderr)
            failed += 1
    failed += len(problems)
    elapsed = time.perf_counter() - started
    print(f"restored {faces_total} face(s) in {written} image(s), {no_face} without a face, {failed} failed "
          f"-> {display_name(output)} ({elapsed:.2f}s, model {restorer.info.name} {restorer.info.version}, "
          f"{restorer.providers[0]})")
    return 1 if failed else 0
