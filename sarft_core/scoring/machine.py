"""Which plan the fast mode follows on the machine at hand: the bfloat16 screen with its float32
re-check, or the exact float32 path.

The screen pays only where bfloat16 matmuls are much faster than float32 ones: about 1.9x on
AMD EPYC with avx512_bf16 (measured: the screen alone took 0.64x the exact time, and with its
re-check 0.95-1.45x), about 6.8x on Intel Xeons with AMX. So the choice is made from the
machine, never from a constant:

- the ISA is read (``/proc/cpuinfo`` flags: amx_bf16, avx512_bf16, avx512f, avx2);
- once per CPU model, torch version and decoder shape, a short measurement (about a second)
  times float32 and bfloat16 matmuls at the model's decoder shapes through oneDNN, single
  threaded as the engine's workers run them;
- :func:`decide` (pure) predicts the screen's time relative to the exact path from that
  speed-up and picks the screen only when it is predicted at most ``SCREEN_MAX_COST``;
- the decision is kept in a small JSON file under ``cache_root()/machine/``, keyed by the CPU
  model, its ISA flags and the torch version (and inside it by decoder shape).

The run itself then guards the choice with the data: the share of samples the re-check sends
back depends on the role (31-80% on six RoleBench roles), so a role whose re-check share makes
the screen slower than the exact path finishes on the exact path (see
:func:`screen_still_pays`).

``SARFT_FAST_PLAN=exact|screen`` forces a plan; ``SARFT_CALIBRATE=0`` skips the measurement and
decides from the ISA alone (:data:`ISA_PRIOR_SPEEDUP`).
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field

import torch

ISA_FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2")
# bf16 / fp32 matmul speed-up assumed when nothing is measured (SARFT_CALIBRATE=0), by the best
# bf16 instructions present: AMX and avx512_bf16 as measured on a Xeon (Sapphire Rapids) and an
# EPYC (Zen 4); without native bf16 dot products oneDNN converts, slower than float32
ISA_PRIOR_SPEEDUP = {"amx_bf16": 6.8, "avx512_bf16": 1.9, "avx512f": 0.6, None: 0.5}
# share of the exact packed path's time spent in matmuls (the rest: attention, norms, RoPE,
# log-softmax, which the screen runs in float32 too): 0.75 reproduces the AMD measurement
# (screen 0.64x exact at a 1.9x matmul speed-up)
MATMUL_SHARE = 0.75
# the screen is chosen when it alone is predicted at most this share of the exact time, so that
# a re-check of up to half the samples still fits (a bf16 speed-up of 3.75x or more; measured:
# 1.9-2.7x on an EPYC with avx512_bf16, 6.8x on a Xeon with AMX)
SCREEN_MAX_COST = 0.45
# cost of re-scoring one sample in float32, relative to scoring it exactly in the first place
# (smaller batches, the exact prefixes computed once more)
RECHECK_COST = 1.1
DECISION_VERSION = 1


def cpu_identity(cpuinfo: str | None = None) -> dict:
    """vendor, model name, family/model numbers and the ISA flags that matter here, from
    ``/proc/cpuinfo`` (``cpuinfo``: its text, for tests), plus torch's CPU capability."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
                cpuinfo = fh.read()
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            if fields:  # the first processor block is enough
                break
            continue
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except Exception:  # an old torch
        capability = "unknown"
    return {
        "vendor": fields.get("vendor_id", platform.machine()),
        "model": fields.get("model name", platform.processor() or platform.machine()),
        "family": fields.get("cpu family", ""),
        "model_number": fields.get("model", ""),
        "isa": [f for f in ISA_FLAGS if f in flags],
        "capability": capability,
    }


def best_bf16_isa(isa) -> str | None:
    for flag in ("amx_bf16", "avx512_bf16", "avx512f"):
        if flag in isa:
            return flag
    return None


def predicted_screen_cost(speedup: float, matmul_share: float = MATMUL_SHARE) -> float:
    """Time of the bf16 screen alone relative to the exact path, when bf16 matmuls run
    ``speedup`` times faster than float32 ones and the rest of the work stays float32."""
    return matmul_share / max(speedup, 1e-9) + (1.0 - matmul_share)


def decide(speedup: float, max_cost: float = SCREEN_MAX_COST) -> tuple[str, float]:
    """("screen" or "exact", the screen's predicted relative cost) for a bf16/fp32 speed-up."""
    cost = predicted_screen_cost(speedup)
    return ("screen" if cost <= max_cost else "exact"), cost


def screen_still_pays(screen_cost: float, screened: int, rechecked: int, passes: int = 2, flag_passes: int = 2) -> bool:
    """Whether the screen, at the re-check share seen so far in a run, is still predicted faster
    than the exact path: ``screen_cost`` per pass for every pass, plus ``RECHECK_COST`` for
    the flag passes of each re-checked sample (the reference pass is never re-checked)."""
    if screened <= 0:
        return True
    share = rechecked / screened
    return screen_cost + share * RECHECK_COST * flag_passes / passes < 1.0


def _timed_gflops(flops: float, op, budget_s: float) -> float:
    """Best GFLOP/s of ``op`` (``flops`` each call) within about ``budget_s`` seconds: at least
    one timed call after the first (which builds oneDNN's kernel), at most 50."""
    t = time.perf_counter()
    op()
    spent = time.perf_counter() - t
    best, runs = 0.0, 0
    while runs < 1 or (spent < budget_s and runs < 50):
        t = time.perf_counter()
        op()
        dt = time.perf_counter() - t
        spent += dt
        runs += 1
        best = max(best, flops / max(dt, 1e-9) / 1e9)
    return best


def measure_matmuls(hidden: int, intermediate: int, rows: int = 256, budget_s: float = 1.0) -> dict:
    """Best GFLOP/s of float32 (IEEE) and bfloat16 matmuls at a decoder's shapes (hidden ->
    hidden, hidden -> intermediate, intermediate -> hidden, ``rows`` tokens), through oneDNN on
    weights reordered once as the engine runs them (``F.linear`` when oneDNN is unavailable),
    on one thread as each of the engine's workers; about ``budget_s`` seconds in all. Each
    dtype's figure is the FLOP-weighted harmonic mean over the three shapes."""
    from sarft_core.scoring.packed import _onednn_linear_op, ieee_matmuls

    op = _onednn_linear_op()
    shapes = [(hidden, hidden), (hidden, intermediate), (intermediate, hidden)]
    threads = torch.get_num_threads()
    gen = torch.Generator().manual_seed(0)
    out: dict[str, float] = {}
    try:
        torch.set_num_threads(1)
        with ieee_matmuls(), torch.no_grad():
            for dtype, name in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
                seconds = flops = 0.0
                for k, m in shapes:
                    x = torch.randn(rows, k, generator=gen).to(dtype)
                    w = torch.randn(m, k, generator=gen).to(dtype)
                    if op is not None:
                        w_op = torch.ops.mkldnn._reorder_linear_weight(w, rows)
                        run = lambda x=x, w_op=w_op: op(x, w_op, None, "none", [], "")  # noqa: E731
                    else:
                        run = lambda x=x, w=w: torch.nn.functional.linear(x, w)  # noqa: E731
                    f = 2.0 * rows * k * m
                    g = _timed_gflops(f, run, budget_s / 6)
                    flops += f
                    seconds += f / (g * 1e9)
                out[name] = flops / seconds / 1e9
    finally:
        torch.set_num_threads(threads)
    return out


@dataclass
class MachineDecision:
    """The fast mode's plan on this machine for one decoder shape, and why."""

    plan: str  # "screen" or "exact"
    screen_cost: float  # the screen alone, predicted, relative to the exact path
    speedup: float  # bf16 / fp32 matmul throughput at the decoder's shapes
    fp32_gflops: float | None
    bf16_gflops: float | None
    source: str  # "measured", "cached", "isa" (SARFT_CALIBRATE=0) or "SARFT_FAST_PLAN"
    cpu: str
    isa: list = field(default_factory=list)
    torch: str = torch.__version__
    shape: str = ""
    path: str = ""  # the JSON file it is kept in

    def describe(self) -> str:
        peaks = (f", fp32 {self.fp32_gflops:.0f} / bf16 {self.bf16_gflops:.0f} GFLOP/s per thread"
                 if self.fp32_gflops and self.bf16_gflops else "")
        return (f"{self.plan} (bf16 {self.speedup:.1f}x fp32 at the decoder shapes{peaks}; screen predicted "
                f"{self.screen_cost:.2f}x the exact time; {self.source}; {self.cpu}, {'/'.join(self.isa) or 'no avx'}, "
                f"torch {self.torch})")


def decision_file(identity: dict | None = None):
    """The JSON file holding this CPU model's decisions for this torch version."""
    from sarft_core.scoring import cache as scoring  # its cache_root, which the tests redirect

    identity = identity or cpu_identity()
    key = json.dumps([DECISION_VERSION, identity["vendor"], identity["model"], identity["family"], identity["model_number"],
                      identity["isa"], torch.__version__], sort_keys=True)
    slug = "".join(c if c.isalnum() else "-" for c in identity["model"])[:40].strip("-") or "cpu"
    return scoring.cache_root() / "machine" / f"fast-plan-{slug}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def decoder_shape(model) -> tuple[int, int]:
    cfg = model.config
    return int(cfg.hidden_size), int(getattr(cfg, "intermediate_size", 4 * cfg.hidden_size))


def machine_decision(model) -> MachineDecision:
    """The fast mode's plan for ``model``'s decoder shape on this machine: forced by
    ``SARFT_FAST_PLAN``, read from the decision file, or measured once (about a second) and kept."""
    from sarft_core.store import atomic_write_json, read_json

    identity = cpu_identity()
    hidden, intermediate = decoder_shape(model)
    shape = f"{hidden}x{intermediate}"
    path = decision_file(identity)
    base = dict(cpu=identity["model"], isa=identity["isa"], shape=shape, path=str(path))
    forced = os.environ.get("SARFT_FAST_PLAN", "").strip().lower()
    if forced in ("exact", "screen"):
        prior = ISA_PRIOR_SPEEDUP[best_bf16_isa(identity["isa"])]
        return MachineDecision(forced, predicted_screen_cost(prior), prior, None, None, "SARFT_FAST_PLAN", **base)
    try:
        known = read_json(path, default={}) or {}
    except (OSError, ValueError):
        known = {}
    entry = known.get("shapes", {}).get(shape) if isinstance(known, dict) and isinstance(known.get("shapes"), dict) else None
    if isinstance(entry, dict):
        try:
            speedup = float(entry["bf16_gflops"]) / float(entry["fp32_gflops"])
            plan, cost = decide(speedup)
            return MachineDecision(plan, cost, speedup, float(entry["fp32_gflops"]), float(entry["bf16_gflops"]), "cached", **base)
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            pass  # a damaged entry: measure again
    if os.environ.get("SARFT_CALIBRATE", "1") == "0":
        speedup = ISA_PRIOR_SPEEDUP[best_bf16_isa(identity["isa"])]
        plan, cost = decide(speedup)
        return MachineDecision(plan, cost, speedup, None, None, "isa", **base)
    peaks = measure_matmuls(hidden, intermediate)
    speedup = peaks["bf16"] / peaks["fp32"]
    plan, cost = decide(speedup)
    decision = MachineDecision(plan, cost, speedup, peaks["fp32"], peaks["bf16"], "measured", **base)
    shapes = dict(known.get("shapes", {})) if isinstance(known, dict) and isinstance(known.get("shapes"), dict) else {}
    shapes[shape] = {"fp32_gflops": peaks["fp32"], "bf16_gflops": peaks["bf16"], "plan": plan, "screen_cost": cost,
                     "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    try:
        atomic_write_json(path, {"identity": identity, "torch": torch.__version__, "version": DECISION_VERSION, "shapes": shapes})
    except OSError:
        pass  # an unwritable cache: decide again next time
    return decision


def decision_dict(decision: MachineDecision) -> dict:
    return asdict(decision)
