"""Shared by the benchmarks: machine info, a plain-text table, JSON output, ROM and peak RSS."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPORT_DIR = ROOT / "reports" / "bench"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    """Platform, CPU count, torch version, device name, date (UTC)."""
    info = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        # other work on the machine skews timings; recorded so a slow run can be explained
        "load_average_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["device"] = torch.cuda.get_device_name(0)
            info["cuda"] = torch.version.cuda
        else:
            info["device"] = "cpu"
    except ImportError:
        info["torch"] = None
        info["device"] = "cpu"
    for name in ("transformers", "peft", "bitsandbytes", "jericho"):
        try:
            module = __import__(name)
            info[name] = getattr(module, "__version__", "?")
        except Exception:  # noqa: BLE001 - an optional library, recorded as absent
            info[name] = None
    return info


def fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        if abs(value) >= 0.01:
            return f"{value:.3f}"
        return f"{value:.2e}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(rows: list[dict], columns: list[str] | None = None, title: str | None = None) -> str:
    """Rows of dicts -> an aligned text table (also printed)."""
    if not rows:
        text = f"{title}\n(no rows)" if title else "(no rows)"
        print(text)
        return text
    columns = columns or list(dict.fromkeys(k for r in rows for k in r))
    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = []
    if title:
        lines.append(title)
    lines.append("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    lines.append("  ".join("-" * w for w in widths))
    for row in cells:
        lines.append(
            "  ".join(
                v.rjust(w) if _numeric(v) else v.ljust(w) for v, w in zip(row, widths, strict=True)
            )
        )
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def _numeric(text: str) -> bool:
    return text.replace(",", "").replace(".", "", 1).replace("-", "", 1).replace("e", "").isdigit()


def write_report(name: str, results: dict, args=None, out_dir: Path | None = None) -> Path:
    """reports/bench/<name>.json with machine info, the CLI arguments and the results."""
    out_dir = Path(out_dir) if out_dir else REPORT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    payload = {
        "benchmark": name,
        "machine": machine_info(),
        "args": vars(args) if args is not None else {},
        **results,
    }
    path.write_text(json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return path


def rom_path(explicit: str | None = None) -> str:
    """--rom, then $ZORK_ROM, then data/roms/zork1.z5, then ../shared/roms/zork1.z5."""
    candidates = [
        explicit,
        os.environ.get("ZORK_ROM"),
        str(ROOT / "data" / "roms" / "zork1.z5"),
        str(ROOT.parent / "shared" / "roms" / "zork1.z5"),
        "/work/shared/roms/zork1.z5",
    ]
    for c in candidates:
        if c and Path(c).is_file():
            return c
    sys.exit(
        "error: no Zork I ROM: pass --rom or set ZORK_ROM (md5 b732a93a6244ddd92a9b9a3e3a46c687)"
    )


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (ru_maxrss is KiB on Linux)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024 if sys.platform != "darwin" else kib / 2**20


def _burn(n: int) -> float:
    started = time.perf_counter()
    total = 0
    for i in range(n):
        total += i * i
    return time.perf_counter() - started


def cpu_parallelism(processes: int = 2, n: int = 3_000_000) -> dict:
    """How much faster `processes` CPU-bound processes finish than one: the ceiling for
    any worker-process speedup on this machine (a 2-vCPU VM may deliver less than 2x)."""
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(processes) as pool:
        pool.map(_burn, [n // 10] * processes)  # start-up outside the timing
        one = min(pool.apply(_burn, (n,)) for _ in range(3))
        many = []
        for _ in range(3):
            started = time.perf_counter()
            pool.map(_burn, [n] * processes, chunksize=1)
            many.append(time.perf_counter() - started)
        many = min(many)
    return {
        "processes": processes,
        "one_s": one,
        "parallel_s": many,
        "speedup": processes * one / many,
    }


def current_rss_mb() -> float:
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        return float("nan")
