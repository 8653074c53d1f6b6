"""Thumbnail engine vs libvips, side by side, plus memory and NudeNet throughput.

    .venv/bin/python bench/bench_thumbnails.py [--runs 7] [--vips-threads 1] [--skip-nudenet]

For each input (12 MP JPEG, 24 MP JPEG, 12 MP PNG, 4K WebP; photo-like content made by
tests/support/images.py) it measures the CPU time (process time, all threads) to make
the default thumbnail sizes, JPEG quality 80, metadata stripped:

* ``engine``: pinster_jobs.ThumbnailEngine.render (Pillow, draft + reduce + cascade;
  ISA-L inflate for PNG, libwebp's scaled decode for WebP);
* ``vips buffer``: pyvips ``thumbnail_buffer`` once per size;
* ``vips cascade``: ``thumbnail_buffer`` for the largest size, then ``thumbnail_image``
  from it for the others (the reference the ratio is computed against).

Runs are interleaved and the median is reported, since the machine is shared. Then:
peak RSS of a fresh process thumbnailing a 50 MP JPEG (engine and vips; target
< 250 MB), and NudeNet images per second pinned to one core.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pinster_jobs import ThumbnailEngine, ThumbnailSettings  # noqa: E402

from pinster_images.resource import DEFAULT_THUMBNAIL_SIZES  # noqa: E402
from pinster_images.sniff import ImageLimits  # noqa: E402
from tests.support import images  # noqa: E402

QUALITY = 80
BOXES = [
    max(int(side) for side in size.split("x") if side != "auto") for size in DEFAULT_THUMBNAIL_SIZES
]


def make_inputs() -> dict[str, bytes]:
    return {
        "12 MP JPEG": images.save(images.photo(4000, 3000, 1), "JPEG", quality=90),
        "24 MP JPEG": images.save(images.photo(6000, 4000, 2), "JPEG", quality=90),
        "12 MP PNG": images.save(images.photo(4000, 3000, 3), "PNG"),
        "4K WebP": images.save(images.photo(3840, 2160, 4), "WEBP", quality=90),
    }


def vips_buffer(data: bytes) -> None:
    import pyvips

    for box in BOXES:
        thumb = pyvips.Image.thumbnail_buffer(data, box, height=box, size="down")
        thumb.jpegsave_buffer(Q=QUALITY, keep="none")


def vips_cascade(data: bytes) -> None:
    import pyvips

    largest = pyvips.Image.thumbnail_buffer(data, BOXES[0], height=BOXES[0], size="down")
    largest = largest.copy_memory()
    largest.jpegsave_buffer(Q=QUALITY, keep="none")
    for box in BOXES[1:]:
        thumb = largest.thumbnail_image(box, height=box, size="down")
        thumb.jpegsave_buffer(Q=QUALITY, keep="none")


def cpu_ms(function: Callable[[], object]) -> float:
    start = time.process_time()
    function()
    return (time.process_time() - start) * 1000


def speed_table(runs: int) -> list[tuple[str, float, float, float, float, float]]:
    engine = ThumbnailEngine(ThumbnailSettings(quality=QUALITY), ImageLimits())
    rows = []
    for name, data in make_inputs().items():
        contenders: dict[str, Callable[[], object]] = {
            "engine": lambda data=data: engine.render(data, DEFAULT_THUMBNAIL_SIZES),  # type: ignore[misc]
            "vips buffer": lambda data=data: vips_buffer(data),  # type: ignore[misc]
            "vips cascade": lambda data=data: vips_cascade(data),  # type: ignore[misc]
        }
        times: dict[str, list[float]] = {label: [] for label in contenders}
        for function in contenders.values():
            function()  # warm up caches and lazy imports
        for _ in range(runs):  # interleaved: load from other processes hits all alike
            for label, function in contenders.items():
                times[label].append(cpu_ms(function))
        medians = {label: statistics.median(values) for label, values in times.items()}
        ours_db, vips_db = quality_db(data)
        rows.append(
            (
                name,
                medians["engine"],
                medians["vips buffer"],
                medians["vips cascade"],
                ours_db,
                vips_db,
            )
        )
    return rows


def quality_db(data: bytes) -> tuple[float, float]:
    """PSNR (dB) of the smallest default thumbnail against a fair Lanczos resize of the
    fully decoded image, engine vs vips, both JPEG q95 (4:4:4): speed bought with
    blur, aliasing or a shifted picture would show here."""
    import io

    import numpy as np
    import pyvips
    from PIL import Image

    engine = ThumbnailEngine(ThumbnailSettings(quality=95), ImageLimits())
    ours = engine.render(data, DEFAULT_THUMBNAIL_SIZES)[-1]
    size = (ours.width, ours.height)
    fair = np.asarray(
        Image.open(io.BytesIO(data)).convert("RGB").resize(size, Image.Resampling.LANCZOS),
        dtype=np.float64,
    )
    vips = pyvips.Image.thumbnail_buffer(data, BOXES[-1], height=BOXES[-1], size="down")
    theirs = vips.jpegsave_buffer(Q=95, keep="none")

    def psnr(encoded: bytes) -> float:
        image = np.asarray(Image.open(io.BytesIO(encoded)).convert("RGB"), dtype=np.float64)
        return float(10 * np.log10(255**2 / np.mean((image - fair) ** 2)))

    return psnr(ours.data), psnr(theirs)


# --- memory ------------------------------------------------------------------------

_RSS_CHILD = """
import sys
sys.path.insert(0, {root!r})
data = open({path!r}, "rb").read()
if {which!r} == "engine":
    from pinster_images.resource import DEFAULT_THUMBNAIL_SIZES
    from pinster_images.sniff import ImageLimits
    from pinster_jobs import ThumbnailEngine, ThumbnailSettings
    engine = ThumbnailEngine(ThumbnailSettings(), ImageLimits())
    if {work!r}:
        engine.render(data, DEFAULT_THUMBNAIL_SIZES)
else:
    sys.argv = ["x"]
    sys.path.insert(0, {bench!r})
    import bench_thumbnails
    if {work!r}:
        bench_thumbnails.vips_cascade(data)
# VmHWM is this process's own peak (ru_maxrss would include the forking parent's).
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        print(int(line.split()[1]) / 1024)
"""


def peak_rss_mb(path: Path, which: str, work: bool) -> float:
    code = _RSS_CHILD.format(
        root=str(ROOT), path=str(path), which=which, work=work, bench=str(ROOT / "bench")
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


# --- NudeNet -------------------------------------------------------------------------

_NUDENET_CHILD = """
import os, sys, time
os.sched_setaffinity(0, {{0}})
sys.path.insert(0, {root!r})
from pinster_images.sniff import ImageLimits, sniff
from pinster_jobs import ModerationSettings, build_moderator
from tests.support import images
moderator = build_moderator(ModerationSettings(backend="nudenet"))
for label, data in (("12 MP JPEG", images.photo_jpeg(4000, 3000)),
                    ("1 MP JPEG", images.photo_jpeg(1200, 900))):
    info = sniff(data, ImageLimits())
    moderator.moderate(data, info)
    start, count = time.perf_counter(), 0
    while time.perf_counter() - start < {seconds}:
        moderator.moderate(data, info)
        count += 1
    print(f"{{label}}\\t{{count / (time.perf_counter() - start):.1f}}")
"""


def nudenet_rates(seconds: float) -> list[tuple[str, float]]:
    out = subprocess.run(
        [sys.executable, "-c", _NUDENET_CHILD.format(root=str(ROOT), seconds=seconds)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = []
    for line in out.strip().splitlines():
        label, rate = line.split("\t")
        rows.append((label, float(rate)))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--vips-threads", type=int, default=1, help="VIPS_CONCURRENCY")
    parser.add_argument("--skip-nudenet", action="store_true")
    args = parser.parse_args()
    os.environ["VIPS_CONCURRENCY"] = str(args.vips_threads)
    import pyvips

    print(
        f"libvips {pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}, "
        f"VIPS_CONCURRENCY={args.vips_threads}, sizes {','.join(DEFAULT_THUMBNAIL_SIZES)}, "
        f"JPEG q{QUALITY}, median of {args.runs} interleaved runs, CPU ms per image\n"
    )
    print(
        f"{'input':<12} {'engine':>8} {'vips buffer':>12} {'vips cascade':>13} "
        f"{'engine/cascade':>15} {'engine/best vips':>17} {'PSNR engine':>12} {'PSNR vips':>10}"
    )
    for name, engine_ms, buffer_ms, cascade_ms, ours_db, vips_db in speed_table(args.runs):
        best = min(buffer_ms, cascade_ms)
        print(
            f"{name:<12} {engine_ms:8.1f} {buffer_ms:12.1f} {cascade_ms:13.1f} "
            f"{engine_ms / cascade_ms:14.2f}x {engine_ms / best:16.2f}x "
            f"{ours_db:9.1f} dB {vips_db:7.1f} dB"
        )
    print("(PSNR: smallest thumbnail vs a fair Lanczos resize of the full image, both q95)")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "50mp.jpg"
        path.write_bytes(images.save(images.photo(8660, 5773, 5), "JPEG", quality=90))
        print(f"\npeak RSS, fresh process, 50 MP JPEG ({path.stat().st_size / 1e6:.1f} MB):")
        for which in ("engine", "vips"):
            idle = peak_rss_mb(path, which, work=False)
            busy = peak_rss_mb(path, which, work=True)
            print(
                f"  {which:<7} {busy:7.1f} MB  (imports + file alone: {idle:.1f} MB; "
                f"target < 250 MB)"
            )

    if not args.skip_nudenet:
        print("\nNudeNet 3.4 (320n ONNX), one thread pinned to one core, decode included:")
        for label, rate in nudenet_rates(seconds=5.0):
            print(f"  {label:<11} {rate:6.1f} images/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
