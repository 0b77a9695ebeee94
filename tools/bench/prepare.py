"""Benchmark `humpback prepare` against a bare datatrove pipeline (WarcReader → Trafilatura → JsonlWriter).

Both run as separate processes on the same WARC shards built from real HTML pages (documentation shipped on
this machine: /usr/share/doc, Node.js/npm docs, the Rust book; the Python standard library's pydoc pages when
none are found). Reported:

- throughput (input documents per second, wall clock including start-up, and per CPU-second, which other
  load on the machine disturbs less) of both at 1× (runs interleaved, best of --reps) and at SCALE×, and
  their ratio (target: humpback ≥ 0.8 × bare); --no-compare-at-scale skips the bare run at SCALE×;
- peak resident memory of humpback prepare's whole process tree at 1× and SCALE× (target: ratio ≤ 1.3),
  next to the bare pipeline's for reference.

Both pipelines use their own trafilatura settings: datatrove's default precision mode for the bare one, the
recall mode humpback needs to keep documentation headings (which happens to be a little faster).

The SCALE× corpus repeats every page SCALE times with a small change in every paragraph, so copies are near
(not exact) duplicates and every stage, MinHash included, sees SCALE× the data. Shard and task counts are the
same at both sizes, so memory can only grow if something holds data proportional to the input.

    python tools/bench/prepare.py [--pages 100] [--scale 10] [--tasks 4] [--workers 2] [--reps 3]
                                  [--no-compare-at-scale] [--keep]
"""

from __future__ import annotations

import argparse
import glob
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import psutil

DOC_GLOBS = [
    "/usr/share/doc/**/*.html",
    "/usr/lib/node_modules/npm/docs/output/**/*.html",
    os.path.expanduser("~/.rustup/toolchains/*/share/doc/rust/html/book/*.html"),
    os.path.join(sys.prefix, "share/doc/**/*.html"),
]

BARE_PIPELINE = textwrap.dedent("""
    import sys
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.readers import WarcReader
    from datatrove.pipeline.writers import JsonlWriter

    if __name__ == "__main__":
        src, out, logs = sys.argv[1], sys.argv[2], sys.argv[3]
        tasks, workers = int(sys.argv[4]), int(sys.argv[5])
        LocalPipelineExecutor(
            [WarcReader(src), Trafilatura(timeout=10.0), JsonlWriter(out)],
            tasks=tasks, workers=workers, logging_dir=logs,
        ).run()
""")


def find_pages(n: int) -> list[tuple[str, bytes]]:
    seen, pages = set(), []
    for pattern in DOC_GLOBS:
        for path in sorted(glob.glob(pattern, recursive=True)):
            try:
                size = os.path.getsize(path)
            except OSError:
                continue
            if not 5_000 <= size <= 400_000:  # ordinary web-page sizes, not book-length single pages
                continue
            raw = Path(path).read_bytes()
            if raw in seen:
                continue
            seen.add(raw)
            pages.append((path, raw))
            if len(pages) >= n:
                return pages
    return pages + pydoc_pages(n - len(pages))


def pydoc_pages(n: int) -> list[tuple[str, bytes]]:
    import importlib
    import pkgutil
    import pydoc

    pages = []
    for mod in sorted(m.name for m in pkgutil.iter_modules() if not m.name.startswith("_")):
        if len(pages) >= n:
            break
        try:
            module = importlib.import_module(mod)
            body = pydoc.html.document(module)
        except Exception:  # modules that fail to import or document are simply skipped
            continue
        if len(body) > 5_000:
            pages.append((f"pydoc:{mod}", pydoc.html.page(mod, body).encode("utf-8")))
    return pages


def write_warcs(pages: list[tuple[str, bytes]], folder: Path, shards: int, copies: int) -> int:
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    folder.mkdir(parents=True)
    outs = [open(folder / f"part-{i:03d}.warc.gz", "wb") for i in range(shards)]
    writers = [WARCWriter(f, gzip=True) for f in outs]
    n = 0
    for copy in range(copies):
        for i, (path, raw) in enumerate(pages):
            # copies differ in every paragraph: near duplicates, not exact ones
            payload = raw if copy == 0 else re.sub(rb"</p>", f" [{copy}]</p>".encode(), raw)
            headers = StatusAndHeaders(
                "200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1"
            )
            url = f"https://docs.example/{copy}/{i}/{os.path.basename(path)}"
            rec = writers[n % shards].create_warc_record(
                url,
                "response",
                payload=io.BytesIO(payload),
                http_headers=headers,
                warc_headers_dict={"WARC-Identified-Payload-Type": "text/html"},
            )
            writers[n % shards].write_record(rec)
            n += 1
    for f in outs:
        f.close()
    return n


def run_measured(cmd: list[str], env: dict) -> tuple[float, int, float]:
    """Wall seconds, peak RSS (bytes) summed over the process and all its descendants, and their CPU seconds.

    CPU time is less disturbed than wall time by other load on the machine; it is summed from the last
    reading of every process seen (polled every 50 ms), so short-lived helpers are counted too.
    """
    peak = 0
    cpu: dict[int, float] = {}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out_chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: out_chunks.append(proc.stdout.read()), daemon=True)
    reader.start()
    ps = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            procs = [ps] + ps.children(recursive=True)
        except psutil.Error:
            procs = []
        total = 0
        for p in procs:
            try:
                with p.oneshot():
                    total += p.memory_info().rss
                    t = p.cpu_times()
                    cpu[p.pid] = t.user + t.system
            except psutil.Error:
                pass
        peak = max(peak, total)
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    reader.join()
    if proc.returncode != 0:
        sys.stderr.write(b"".join(out_chunks).decode(errors="replace")[-4000:])
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}")
    return wall, peak, sum(cpu.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=int, default=100)
    ap.add_argument("--scale", type=int, default=10)
    ap.add_argument("--tasks", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3, help="runs per pipeline at 1x (best is kept)")
    ap.add_argument(
        "--compare-at-scale",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run the bare pipeline at SCALE x (the throughput once start-up is amortised)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="humpback-bench-prepare-"))
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    bare_script = tmp / "bare.py"
    bare_script.write_text(BARE_PIPELINE)
    try:
        pages = find_pages(args.pages)
        print(
            f"corpus: {len(pages)} real HTML pages ({sum(len(r) for _, r in pages) / 1e6:.1f} MB), "
            f"{args.tasks} WARC shards, tasks={args.tasks} workers={args.workers}"
        )
        results = {}
        for scale in (1, args.scale):
            src = tmp / f"warc-{scale}x"
            ndocs = write_warcs(pages, src, args.tasks, scale)
            runs: dict[str, list[tuple[float, int, float]]] = {}
            # interleaved (bare, humpback, bare, ...) so that load from elsewhere hits both alike
            names = ("bare", "humpback") if scale == 1 or args.compare_at_scale else ("humpback",)
            for rep in range(args.reps if scale == 1 else 1):
                for name in names:
                    out = tmp / f"out-{name}-{scale}x-{rep}"
                    if name == "bare":
                        cmd = [
                            sys.executable,
                            str(bare_script),
                            str(src),
                            str(out / "data"),
                            str(out / "logs"),
                            str(args.tasks),
                            str(args.workers),
                        ]
                    else:
                        cmd = [
                            sys.executable,
                            "-m",
                            "humpback",
                            "prepare",
                            str(src),
                            "--output",
                            str(out),
                            "--tasks",
                            str(args.tasks),
                            "--workers",
                            str(args.workers),
                            "--no-progress",
                        ]
                    runs.setdefault(name, []).append(run_measured(cmd, env))
                    shutil.rmtree(out, ignore_errors=True)
            for name, rs in runs.items():
                wall = min(r[0] for r in rs)
                rss = max(r[1] for r in rs)
                cpu = min(r[2] for r in rs)
                results[(name, scale)] = (ndocs, wall, rss, cpu)
                print(
                    f"  {name:<9} {scale:>3}x: {ndocs:>6} docs in {wall:7.1f} s = {ndocs / wall:7.1f} docs/s "
                    f"(CPU {cpu:6.1f} s), peak RSS {rss / 2**20:6.0f} MiB"
                )
        print()
        for scale in (1, args.scale):
            if ("bare", scale) not in results:
                continue
            (_, wb, _, cb), (_, wh, _, ch) = results[("bare", scale)], results[("humpback", scale)]
            print(
                f"throughput ratio humpback/bare at {scale:>2}x: {wb / wh:.2f} wall-clock, "
                f"{cb / ch:.2f} per CPU-second  (target >= 0.80)"
            )
        rss1, rssn = results[("humpback", 1)][2], results[("humpback", args.scale)][2]
        bare = f"bare pipeline at 1x: {results[('bare', 1)][2] / 2**20:.0f} MiB"
        if ("bare", args.scale) in results:
            bare += (
                f", {args.scale}x/1x ratio {results[('bare', args.scale)][2] / results[('bare', 1)][2]:.2f}"
            )
        print(
            f"peak RSS humpback {args.scale}x/1x: {rssn / 2**20:.0f}/{rss1 / 2**20:.0f} MiB = "
            f"{rssn / rss1:.2f}  (target <= 1.30; {bare})"
        )
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
