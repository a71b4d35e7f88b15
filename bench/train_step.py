"""Images per second of one training step per strategy, as ratios to the supervised cross-entropy step.

    python bench/train_step.py --profile smoke --device cpu --steps 10
    python bench/train_step.py --profile gpu --model r50-psp --crop 512x1024 --batch-size 8 --compare-amp

A step is what the loop does per iteration once the batches are on the device: the strategy's step
(forward, loss), backward, optimiser step and ``after_step``. Each strategy is built the way a run builds
it (``blvnb.experiments.runs``: the profile's data, model and recipe), its batches are drawn once and
reused, and every strategy is timed in the same process, interleaved round by round, so the ratios
hold even on a loaded machine. ``--compare-amp`` adds the supervised step in bf16 + channels_last
(GPU). Writes JSON with ``--out``.

To add a strategy: one entry in :data:`STRATEGY_BENCHES` (run overrides, as for ``RunConfig.from_profile``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from blvnb.devices import resolve_device  # noqa: E402
from blvnb.engine import loop  # noqa: E402
from blvnb.engine.strategies import get_builder  # noqa: E402
from blvnb.experiments.runs import RunConfig, RunData, build_run_model  # noqa: E402

#: name → RunConfig overrides; the first entry is the reference (ratio 1)
STRATEGY_BENCHES: dict[str, dict] = {
    "supervised-ce": dict(strategy="supervised", loss="ce"),
    "supervised-blv": dict(strategy="supervised", loss="blv", loss_options={"sigma": 6.0}),
    "mean-teacher": dict(strategy="mean-teacher", labeled_fraction="1/8"),
    "mean-teacher-blv": dict(strategy="mean-teacher", labeled_fraction="1/8", loss="blv", loss_options={"sigma": 6.0}),
    "uda-source-only": dict(strategy="uda", dataset="gta5", target="cityscapes", strategy_options={"source_only": True}),
    "uda-daformer": dict(strategy="uda", dataset="gta5", target="cityscapes"),
    "uda-daformer-blv": dict(strategy="uda", dataset="gta5", target="cityscapes", loss="blv", loss_options={"sigma": 6.0}),
    "uda-dars-sd": dict(strategy="uda", dataset="gta5", target="cityscapes", strategy_options={"pseudo": "dars-sd"}),
    # A DARS round's step is two supervised forwards (labeled + pseudo-labeled); building round k >= 1 trains
    # its teacher first, so it is not in this bench (its labelling pass is timed by bench/dars_scale.py).
}


class StepBench:
    """One strategy, built as a run builds it, with a few batches on the device."""

    def __init__(self, cfg: RunConfig, device: torch.device, amp: bool, channels_last: bool, n_batches: int = 2):
        data = RunData(cfg, cfg.key(), device)
        self.model = build_run_model(cfg, data).to(device)
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        built = get_builder(cfg.strategy)(cfg, data)
        self.strategy = built.strategy
        self.strategy.seed = cfg.seed
        self.strategy.setup(self.model, device)
        tcfg = loop.TrainConfig(iters=1, **built.train_overrides)
        self.opt = loop.build_optimizer(self.strategy.param_groups(self.model), tcfg)
        self.batches = [{n: loop.to_device(built.streams[n].next(), device, channels_last) for n in self.strategy.streams}
                        for _ in range(n_batches)]
        self.images = sum(int(b["image"].shape[0]) for b in self.batches[0].values())
        self.device, self.amp, self.it = device, amp, 0
        self.model.train()

    def step(self) -> None:
        batches = self.batches[self.it % len(self.batches)]
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            loss, _ = self.strategy.step(self.model, batches, self.it)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.strategy.after_step(self.model, self.it)
        self.it += 1

    def time(self, steps: int) -> float:
        """Seconds per step over ``steps`` steps (device synchronised)."""
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            self.step()
        sync()
        return (time.perf_counter() - t0) / steps


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("--model", default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--crop", default=None, help="HxW")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per strategy per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--only", nargs="*", default=None, help="names of STRATEGY_BENCHES")
    ap.add_argument("--compare-amp", action="store_true", help="also supervised-ce in bf16 + channels_last")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    device = resolve_device(args.device)
    over = {k: v for k, v in dict(model=args.model, batch_size=args.batch_size).items() if v is not None}
    if args.crop:
        h, w = (int(v) for v in args.crop.lower().split("x"))
        over.update(crop=(h, w), size=(h, w))
    names = args.only or list(STRATEGY_BENCHES)
    benches = {}
    for name in names:
        cfg = RunConfig.from_profile(args.profile, device=str(device), progress=False, **{**STRATEGY_BENCHES[name], **over})
        benches[name] = StepBench(cfg, device, amp=False, channels_last=False)
    if args.compare_amp:
        cfg = RunConfig.from_profile(args.profile, device=str(device), progress=False, **{**STRATEGY_BENCHES[names[0]], **over})
        benches[names[0] + "-bf16-cl"] = StepBench(cfg, device, amp=True, channels_last=True)
    for b in benches.values():
        b.time(args.warmup)
    times: dict[str, list[float]] = {n: [] for n in benches}
    for _ in range(args.rounds):  # interleaved, so that load changes hit every strategy alike
        for n, b in benches.items():
            times[n].append(b.time(args.steps))
    ref = names[0]
    best = {n: min(t) for n, t in times.items()}
    result = {"device": str(device), "profile": args.profile, "torch": torch.__version__,
              "threads": torch.get_num_threads(), "steps": args.steps, "rounds": args.rounds,
              "reference": ref, "strategies": {}}
    for n, b in benches.items():
        ips = b.images / best[n]
        result["strategies"][n] = {"images_per_step": b.images, "seconds_per_step": best[n], "images_per_s": ips,
                                   "ratio_to_reference": (b.images / best[n]) / (benches[ref].images / best[ref])}
        print(f"{n:28s} {ips:9.1f} images/s   x{result['strategies'][n]['ratio_to_reference']:.3f} of {ref}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
