"""A labelled set of inputs a chest X-ray classifier must refuse, for measuring an input gate.

Each kind lands in OUTPUT_DIR/<kind>/ as <kind>_<nnn>[_detail].<ext>: natural photos (scikit-image's
bundled samples), document pages, noise, blank frames, tiny images and X-rays made wrong (inverted, rotated,
cropped). The X-ray kinds are lossless PNG, comparable with their source pixel for pixel. Usage:
    python3 -m bench.out_of_scope OUTPUT_DIR XRAY_DIR [--per-kind N] [--seed S]
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

KINDS = ("natural_photo", "natural_grey", "document", "noise", "blank", "tiny", "inverted_xray", "rotated_xray",
         "cropped_xray")
# Only samples shipped inside the scikit-image wheel: the others need pooch and a download.
COLOUR_SAMPLES = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
                  "colorwheel", "logo")
GREY_SAMPLES = ("camera", "moon", "coins", "brick", "grass", "gravel", "horse", "clock", "cell", "text")
TINY_SIZES = ((1, 1), (8, 8), (16, 16), (28, 28), (60, 48), (480, 24))  # (width, height): one side < 64
WORDS = ("patient", "report", "invoice", "total", "date", "section", "results", "the", "of", "and", "account", "page",
         "summary", "review", "policy", "number", "address", "signed", "terms", "payment", "order", "table", "notes")
Image = np.ndarray
Sample = Tuple[str, Image]  # (detail for the file name, pixels)
Maker = Callable[[int, np.random.Generator], Sample]


def _samples() -> Tuple[List[Sample], List[Sample]]:
    """The bundled colour (RGB) and grey samples that load here; a missing one is skipped."""
    try:
        from skimage import data
    except ImportError as error:
        raise ValueError("natural images need scikit-image (pip install scikit-image)") from error
    colour: List[Sample] = []
    grey: List[Sample] = []
    for name in COLOUR_SAMPLES + GREY_SAMPLES:
        try:
            image = np.asarray(getattr(data, name)())
        # Absent in this version, or needs pooch and a download: any failure only skips the sample.
        except Exception:  # noqa: S112 (a sample that fails to load is skipped, by design)
            continue
        if image.dtype == bool:  # horse is a binary mask
            image = image.astype(np.uint8) * 255
        if image.ndim == 3 and image.shape[2] == 4:  # logo: composite its transparency on white
            alpha = image[..., 3:] / 255.0
            image = (image[..., :3] * alpha + 255 * (1 - alpha)).round().astype(np.uint8)
        (colour if image.ndim == 3 else grey).append((name, image.astype(np.uint8)))
    if not colour or not grey:
        raise ValueError("scikit-image's bundled sample images could not be loaded")
    return colour, grey


def _fit(image: Image, rng: np.random.Generator, crop: bool) -> Image:
    """A random crop (50-100% per side) when asked, rescaled so each side lies in 200-1200 px."""
    if crop:
        h, w = image.shape[:2]
        ch, cw = int(h * rng.uniform(0.5, 1.0)), int(w * rng.uniform(0.5, 1.0))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        image = image[y:y + ch, x:x + cw]
    h, w = image.shape[:2]
    low, high = 200 / min(h, w), 1200 / max(h, w)
    scale = rng.uniform(low, high) if crop and low < high else min(max(1.0, low), high)
    size = (int(np.clip(round(w * scale), 200, 1200)), int(np.clip(round(h * scale), 200, 1200)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)


def _natural(samples: List[Sample]) -> Maker:
    """The samples as they are first, then random crops and rescales of them."""
    def make(i: int, rng: np.random.Generator) -> Sample:
        name, image = samples[i % len(samples)]
        return name, _fit(image, rng, crop=i >= len(samples))
    return make


def _table(page: Image, top: int, cols: int, rng: np.random.Generator) -> int:
    """Draw a 6-row grid of numbers from y=top; return the y below it."""
    w, rows, left = page.shape[1], 6, [70 + c * (page.shape[1] - 140) // cols for c in range(cols + 1)]
    for r in range(rows + 1):
        cv2.line(page, (70, top + 40 * r), (w - 70, top + 40 * r), 30, 1)
    for c, x in enumerate(left):
        cv2.line(page, (x, top), (x, top + 40 * rows), 30, 1)
        for r in range(rows if c < cols else 0):
            cv2.putText(page, str(int(rng.integers(0, 10000))), (x + 10, top + 40 * r + 28),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.6, 30, 1, cv2.LINE_AA)
    return top + 40 * rows + 40


def _document(i: int, rng: np.random.Generator) -> Sample:
    """An off-white page with a heading, lines of words, sometimes a table; slightly skewed and noisy."""
    h, w = int(rng.integers(1000, 1200)), int(rng.integers(780, 920))
    paper = int(rng.integers(228, 256))
    page = np.full((h, w), paper, np.uint8)
    cv2.putText(page, " ".join(rng.choice(WORDS, 3)).upper(), (70, 110), cv2.FONT_HERSHEY_DUPLEX,
                float(rng.uniform(1.3, 2.0)), 20, 3, cv2.LINE_AA)
    y, table = 180, bool(rng.random() < 0.5)
    while y < h - 80:
        if table and y > h // 2:  # a grid of numbers in the lower half
            y, table = _table(page, y, int(rng.integers(3, 6)), rng), False
            continue
        font = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX)[int(rng.integers(0, 2))]
        scale, x = float(rng.uniform(0.5, 0.9)), 70
        while x < w - 160:  # words until the right margin
            word = str(rng.choice(WORDS))
            cv2.putText(page, word, (x, y), font, scale, int(rng.integers(0, 60)), 1, cv2.LINE_AA)
            x += cv2.getTextSize(word + " ", font, scale, 1)[0][0]
        y += int(45 * scale) + (int(rng.integers(20, 40)) if rng.random() < 0.15 else 0)  # paragraph gaps
    skew = cv2.getRotationMatrix2D((w / 2, h / 2), float(rng.uniform(-3, 3)), 1.0)
    page = cv2.warpAffine(page, skew, (w, h), flags=cv2.INTER_LINEAR, borderValue=paper)
    if rng.random() < 0.5:
        page = cv2.GaussianBlur(page, (3, 3), 0)
    page = np.clip(page + rng.normal(0, rng.uniform(0, 6), page.shape), 0, 255).astype(np.uint8)
    inverted = bool(rng.random() < 0.25)  # white text on black, as a screenshot in dark mode
    return ("inverted" if inverted else ""), (255 - page if inverted else page)


def _noise(i: int, rng: np.random.Generator) -> Sample:
    """Uniform, Gaussian, salt-and-pepper or low-frequency noise, grey then colour, 256-1024 px."""
    style, colour = ("uniform", "gaussian", "saltpepper", "lowfreq")[i % 4], (i // 4) % 2 == 1
    shape = (int(rng.integers(256, 1025)), int(rng.integers(256, 1025))) + ((3,) if colour else ())
    if style == "uniform":
        image = rng.integers(0, 256, shape)
    elif style == "gaussian":
        image = rng.normal(rng.uniform(80, 180), rng.uniform(20, 60), shape)
    elif style == "saltpepper":
        image, hit = np.full(shape, rng.uniform(60, 200)), rng.random(shape) < rng.uniform(0.05, 0.3)
        image[hit] = rng.choice([0, 255], int(hit.sum()))
    else:  # coarse noise smoothly enlarged: blobs, closer to an image's spectrum than white noise
        step = int(rng.integers(16, 65))
        coarse = rng.uniform(0, 255, (shape[0] // step + 2, shape[1] // step + 2) + shape[2:]).astype(np.float32)
        image = cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    return f"{style}_{'colour' if colour else 'grey'}", np.clip(image, 0, 255).astype(np.uint8)


def _blank(i: int, rng: np.random.Generator) -> Sample:
    """A near-constant frame: black, white, mid grey or a faint gradient, with noise of std <= 2."""
    style = ("black", "white", "grey", "gradient")[i % 4]
    h, w = int(rng.integers(256, 1025)), int(rng.integers(256, 1025))
    level = {"black": rng.uniform(0, 6), "white": rng.uniform(249, 255)}.get(style, rng.uniform(90, 170))
    image = np.full((h, w), level)
    if style == "gradient":  # at most 20 grey levels across the frame, in a random direction
        angle, ramp = rng.uniform(0, 2 * np.pi), rng.uniform(4, 20)
        yy, xx = np.mgrid[0:h, 0:w]
        image += ramp * ((np.cos(angle) * xx / w + np.sin(angle) * yy / h) - 0.5)
    image += rng.normal(0, rng.uniform(0, 2), (h, w))
    return style, np.clip(image.round(), 0, 255).astype(np.uint8)


def _xray_makers(xrays: List[Image]) -> Dict[str, Maker]:
    """The kinds made from X-rays; the i-th image comes from xrays[i % len(xrays)]."""
    def tiny(i: int, rng: np.random.Generator) -> Sample:
        size = TINY_SIZES[i % len(TINY_SIZES)]
        return f"{size[0]}x{size[1]}", cv2.resize(xrays[i % len(xrays)], size, interpolation=cv2.INTER_AREA)

    def rotated(i: int, rng: np.random.Generator) -> Sample:
        angle = (90, 180, 270)[(i // len(xrays) + i) % 3]  # each X-ray goes through all three over the passes
        turn = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}[angle]
        return f"rot{angle}cw", cv2.rotate(xrays[i % len(xrays)], turn)

    def cropped(i: int, rng: np.random.Generator) -> Sample:
        image = xrays[i % len(xrays)]
        h, w = image.shape
        ch, cw = max(1, int(h * rng.uniform(0.15, 0.3))), max(1, int(w * rng.uniform(0.15, 0.3)))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        scale = 512 / max(ch, cw)  # the window's longer side back to 512 px
        size = (max(1, round(cw * scale)), max(1, round(ch * scale)))
        return "", cv2.resize(image[y:y + ch, x:x + cw], size, interpolation=cv2.INTER_CUBIC)

    return {"tiny": tiny, "inverted_xray": lambda i, rng: ("", 255 - xrays[i % len(xrays)]),
            "rotated_xray": rotated, "cropped_xray": cropped}


def _read_xrays(paths: Sequence[str], count: int) -> List[Image]:
    """The first `count` readable X-rays, in the order given, as 8-bit grey; unreadable ones are skipped."""
    xrays: List[Image] = []
    for path in paths:
        image = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
        if image is not None and image.size:
            xrays.append(image)
            if len(xrays) == count:
                break
    if not xrays:
        raise ValueError(f"no readable X-ray among the {len(paths)} given (the X-ray kinds need at least one)")
    return xrays


def write_out_of_scope_set(xray_paths: Sequence[str], output_dir: str, per_kind: int = 20,
                           seed: int = 0) -> Dict[str, List[str]]:
    """Write images of every kind under output_dir/<kind>/ and return {kind: [paths]}."""
    if per_kind < 1:
        raise ValueError(f"per_kind must be at least 1, not {per_kind}")
    if os.path.exists(output_dir) and (not os.path.isdir(output_dir) or os.listdir(output_dir)):
        raise ValueError(f"{output_dir} exists and is not an empty folder; refusing to write into it")
    xrays, (colour, grey) = _read_xrays(xray_paths, per_kind), _samples()  # every check before any write
    greyed = [(name + "_grey", cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)) for name, image in colour]
    makers: Dict[str, Maker] = {"natural_photo": _natural(colour), "natural_grey": _natural(grey + greyed),
                                "document": _document, "noise": _noise, "blank": _blank, **_xray_makers(xrays)}
    written: Dict[str, List[str]] = {}
    for number, kind in enumerate(KINDS):
        rng = np.random.default_rng([seed, number])  # one stream per kind: changing one kind leaves the rest
        folder = os.path.join(output_dir, kind)
        os.makedirs(folder, exist_ok=True)
        lossy = kind in ("natural_photo", "document")  # the X-ray kinds stay lossless, to compare exactly
        ext, options = (".jpg", [cv2.IMWRITE_JPEG_QUALITY, 90]) if lossy else (".png", [])
        written[kind] = []
        for i in range(per_kind):
            detail, image = makers[kind](i, rng)
            if kind == "natural_photo":
                image = image[..., ::-1]  # skimage gives RGB, OpenCV writes BGR
            path = os.path.join(folder, f"{kind}_{i:03d}{'_' + detail if detail else ''}{ext}")
            if not cv2.imwrite(path, np.ascontiguousarray(image), options):
                raise OSError(f"could not write {path}")
            written[kind].append(path)
    return written


def find_xrays(folder: str) -> List[str]:
    """Every .jpeg/.jpg/.png under folder, recursively, in a stable (sorted) order."""
    if not os.path.isdir(folder):
        raise ValueError(f"no such folder: {folder}")
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        found += [os.path.join(root, f) for f in sorted(files) if f.lower().endswith((".jpeg", ".jpg", ".png"))]
    return found


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="out_of_scope", description=__doc__.splitlines()[0])
    parser.add_argument("output_dir", help="a new or empty folder to write the set into")
    parser.add_argument("xray_dir", help="a folder searched recursively for .jpeg/.jpg/.png X-rays")
    parser.add_argument("--per-kind", type=int, default=20, help="images per kind (default 20)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        written = write_out_of_scope_set(find_xrays(args.xray_dir), args.output_dir, args.per_kind, args.seed)
    except (ValueError, OSError) as error:
        print(f"out_of_scope: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    for kind in KINDS:
        print(f"{kind}: {len(written[kind])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
