"""An end-to-end demo that runs offline in a few minutes: ``geomatch demo``.

:func:`run_demo` walks through the whole method on a small synthetic world
(:mod:`geomatch.demo.world`: 3-D toy dogs, cats and cars seen from the front
or the back, written in the SPair-71k on-disk layout by
:mod:`geomatch.demo.synthetic` and read by the ordinary SPair-71k loader),
with a weight-free stand-in for DINOv2
(:class:`geomatch.demo.featurizers.PartColourFeaturizer`), whose descriptors
find a part but cannot tell it from its mirror twin:

1. generate the dataset into ``OUT/data``;
2. featurize every image (and the horizontal flips of the training images) into ``OUT/cache``;
3. evaluate the raw features on the test split;
4. train the attention head (run folder ``OUT/train``), picking the
   checkpoint of best PCK on ``settings.val_subset`` validation pairs;
5. evaluate the trained head on the test split;
6. write ``OUT/report.md`` (every metric of both, side by side), the figures
   in ``OUT/figures`` and ``OUT/geomatch-demo.json`` (the metrics, machine-readable).

A folder left by an interrupted run is resumed when the seed and settings
match (data, features and the training checkpoint are kept), and otherwise
cleared and started over; the run says which.

Command line::

    geomatch demo [--out DIR] [--quick] [--seed N] [--no-progress]

The pieces live in small modules: :mod:`~geomatch.demo.settings`,
:mod:`~geomatch.demo.steps`, :mod:`~geomatch.demo.report`,
:mod:`~geomatch.demo.figures`, :mod:`~geomatch.demo.threads`;
``notebooks/quickstart.ipynb`` runs the same steps one by one.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from .figures import FIGURE_RULE, plot_confusions, plot_training, plot_transfer_comparison
from .figures import save_figure, select_figure_pairs
from .report import confusion_counts, metrics_summary, next_steps, write_report
from .settings import FULL, QUICK, DemoSettings
from .steps import featurize_dataset, predictions, prepare_out, train_head, write_state
from .threads import limit_threads

__all__ = ["run_demo", "configure_parser", "run_cli"]


def run_demo(out_dir="geomatch-demo", quick: bool = False, seed: int = 0, *,
             settings: Optional[DemoSettings] = None, progress: Optional[bool] = None,
             verbose: bool = True, threads: Optional[int] = 1) -> dict:
    """Run the whole demo (see the module docstring) and write the report.

    Parameters
    ----------
    out_dir : path
        Output folder: ``data/``, ``cache/``, ``train/``, ``figures/``,
        ``report.md``, ``geomatch-demo.json``.  It must be new, empty or an
        earlier demo's folder (a finished run is replaced; an interrupted one
        of the same seed and settings is resumed).
    quick : bool
        Use :data:`~geomatch.demo.settings.QUICK` instead of
        :data:`~geomatch.demo.settings.FULL`.
    seed : int
        Seeds the dataset, the head's initialization and the training order.
    settings : DemoSettings, optional
        Overrides ``quick``.
    progress : bool, optional
        Progress bars (default: on unless ``GEOMATCH_NO_PROGRESS=1``).
    verbose : bool
        Print what each stage does, and where the report is.
    threads : int or None, default 1
        Threads for geomatch's kernels and NumPy's BLAS during the run
        (restored afterwards); the demo's matrices are small, so one thread
        avoids synchronization stalls on a busy machine.  None keeps the
        current settings.

    Returns
    -------
    dict
        ``report`` (path), ``figures`` (``transfers`` list, ``confusions``,
        ``training``), ``before`` / ``after``
        (:class:`~geomatch.eval.evaluate.EvalResult`), ``metrics`` (``raw`` /
        ``head``: :func:`~geomatch.demo.report.metrics_summary`), ``train``
        (:class:`~geomatch.model.train.TrainResult`), ``head`` (the evaluated
        head: the checkpoint of best validation PCK), ``raw_val``,
        ``timings`` (stage -> seconds), ``settings`` (dict), ``start``
        (``"new"``, ``"resume"`` or ``"restart"``), ``out_dir``, ``dataset``,
        ``cache``.
    """
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, (int, np.integer))
                                or threads < 1):
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    settings = settings or (QUICK if quick else FULL)
    if not isinstance(settings, DemoSettings):
        raise TypeError(f"settings must be a DemoSettings, got {type(settings).__name__}")
    with limit_threads(threads):
        return _Run(Path(out_dir).expanduser(), int(seed), settings, progress, verbose).run()


class _Run:
    """One demo run, stage by stage."""

    def __init__(self, out: Path, seed: int, settings: DemoSettings, progress, verbose):
        self.out, self.seed, self.settings, self.progress = out, seed, settings, progress
        self.say = print if verbose else (lambda *a, **k: None)
        self.timings: Dict[str, float] = {}
        # as it reads back from the state file (tuples become lists)
        self.run_id = json.loads(json.dumps({"seed": seed, "settings": settings.to_dict()}))

    def _timed(self, name, fn, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        self.timings[name] = time.perf_counter() - t0
        return out

    def run(self) -> dict:
        t_all = time.perf_counter()
        start = prepare_out(self.out, self.run_id)
        self.say({"new": f"Demo in {self.out} (seed {self.seed})",
                  "resume": f"Resuming the interrupted demo in {self.out} (same seed and "
                            f"settings): keeping its data, features and training checkpoint",
                  "restart": f"Starting over in {self.out}: removed the outputs of an earlier "
                             f"demo run (finished, or of other settings)"}[start])
        write_state(self.out, {"status": "running", "run": self.run_id})
        dataset = self._timed("data", self.data)
        cache = self._timed("features", self.features, dataset)
        self.say("[3/6] evaluating the raw features on the test split ...")
        before = self._timed("eval raw", self.evaluate, dataset, cache, None)
        tres, val_pairs, from_step = self._timed("train", self.train, dataset, cache,
                                                 start == "resume")
        from ..model.head import load_head
        from ..model.train import validate

        raw_val = validate(val_pairs, cache, None)
        head = load_head(tres.best_path) if tres.best_path is not None else tres.head
        self.say(f"[5/6] evaluating the trained head ({tres.best_path or 'last step'}) "
                 f"on the test split ...")
        after = self._timed("eval head", self.evaluate, dataset, cache, head)
        self.say("[6/6] drawing the figures and writing the report ...")
        figures = self._timed("figures", self.figures, dataset, cache, head, before, after,
                              tres, raw_val)
        self.timings["total"] = time.perf_counter() - t_all
        metrics = {"raw": metrics_summary(before), "head": metrics_summary(after)}
        report = write_report(self.out / "report.md", before, after, figures=figures,
                              settings=self.settings, timings=self.timings,
                              train_result=tres, n_val_pairs=len(val_pairs), start=start)
        cb, ca = confusion_counts(before)["all"], confusion_counts(after)["all"]
        summary = {"status": "done", "run": self.run_id, "seed": self.seed,
                   "settings": self.settings.to_dict(), "start": start,
                   "resumed_from_step": from_step, "timings": self.timings,
                   "alphas": before.alphas, "metrics": metrics,
                   "pck_point": {"raw": before.overall["pck_point"],
                                 "head": after.overall["pck_point"]},
                   "confusions": {"raw": cb, "head": ca}, "n_val_pairs": len(val_pairs),
                   "n_test_pairs": before.n_pairs,
                   "best_checkpoint": {"path": str(tres.best_path) if tres.best_path else None,
                                       "val_pck": tres.best_val}}
        write_state(self.out, summary)
        self._headline(before, after)
        self.say(f"Report: {report}")
        self.say(f"Figures: {self.out / 'figures'}")
        self.say("")
        self.say("Next, on SPair-71k with real DINOv2 weights:")
        self.say(next_steps())
        return {"out_dir": self.out, "report": report, "figures": figures, "before": before,
                "after": after, "metrics": metrics, "train": tres, "head": head,
                "raw_val": raw_val, "timings": self.timings, "settings": self.settings.to_dict(),
                "start": start, "dataset": dataset, "cache": cache}

    # -- stages --------------------------------------------------------------

    def data(self):
        from . import synthetic
        from ..data import load_dataset

        s = self.settings
        self.say(f"[1/6] generating the synthetic dataset in {self.out / 'data'} ...")
        info = synthetic.generate_spair_like(
            self.out / "data", n_images_per_category=s.n_images_per_category,
            n_pairs=s.n_pairs, seed=self.seed, size=s.image_size, categories=s.categories)
        n_pairs = {k: len(v) for k, v in info["pairs"].items()}
        self.say(f"      categories {info['categories']}, pairs {n_pairs}")
        return load_dataset("spair", self.out / "data")

    def features(self, dataset):
        featurizer = self.settings.featurizer()
        self.say(f"[2/6] featurizing every image (and the mirror images of the training split): {featurizer}")
        # mirrored images are only read by the training's flip augmentation
        featurize_dataset(dataset, self.out / "cache", featurizer, splits=("trn",),
                          flip=self.settings.flip_aug, progress=self.progress)
        return featurize_dataset(dataset, self.out / "cache", featurizer,
                                 splits=("val", "test"), flip=False, progress=self.progress)

    def evaluate(self, dataset, cache, head):
        from ..eval.evaluate import evaluate

        return evaluate(dataset, "test", cache, head=head, progress=self.progress is not False)

    def train(self, dataset, cache, resume):
        s = self.settings
        self.say(f"[4/6] training the attention head ({s.steps} steps of {s.batch_pairs} "
                 f"pairs, best checkpoint on {s.val_subset} validation pairs) ...")
        tres, val_pairs, start = train_head(dataset, cache, self.out / "train", s, self.seed,
                                            resume=resume, progress=self.progress)
        if start:
            self.say(f"      (continued the interrupted training from step {start})")
        return tres, val_pairs, start

    def figures(self, dataset, cache, head, before, after, tres, raw_val):
        fig_dir = self.out / "figures"
        fig_dir.mkdir(exist_ok=True)
        figures: Dict[str, object] = {
            "confusions": save_figure(plot_confusions(before, after), fig_dir / "confusions.png"),
            "training": save_figure(plot_training(tres, raw_val=raw_val),
                                    fig_dir / "training.png"),
            "transfers": [], "rule": FIGURE_RULE.format(seed=self.settings.figure_seed)}
        pairs = list(dataset.pairs("test"))
        chosen = select_figure_pairs(pairs, seed=self.settings.figure_seed)
        sub = [pairs[i] for i in chosen]
        preds_b = predictions(sub, cache, None)
        preds_a = predictions(sub, cache, head)
        for j, (i, p) in enumerate(zip(chosen, sub)):
            fig = plot_transfer_comparison(p, preds_b[j], preds_a[j])
            figures["transfers"].append(save_figure(fig, fig_dir / f"transfer_{j}_{p.category}.png"))
        return figures

    def _headline(self, before, after):
        i10 = int(np.argmin([abs(a - 0.10) for a in before.alphas]))

        def pct(v):
            return "–" if v is None else f"{100 * v:.1f}"

        cb, ca = confusion_counts(before)["all"], confusion_counts(after)["all"]
        self.say("")
        self.say(f"Test split, α = 0.10 — raw features -> trained head ({self.timings['total']:.0f} s):")
        for kind, title in (("pck_point", "PCK per point"), ("pck_image", "PCK per image"),
                            ("pck_geo", "PCK geometry-aware")):
            self.say(f"  {title:<20} {pct(before.overall[kind][i10]):>5} % -> "
                     f"{pct(after.overall[kind][i10]):>5} %")
        self.say(f"  {'left/right swaps':<20} {cb['n11_bar']:>5} -> {ca['n11_bar']:>5}  "
                 f"(of {cb['n11']} keypoints whose twin is visible)")


# ---------------------------------------------------------------------------
# CLI

def configure_parser(parser) -> None:
    """Arguments of ``geomatch demo``."""
    parser.add_argument("--out", default="geomatch-demo",
                        help="output folder (default: ./geomatch-demo)")
    parser.add_argument("--quick", action="store_true",
                        help="fewer training steps at a higher learning rate (a little faster)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_cli(args) -> int:
    """Run ``geomatch demo``."""
    threads = getattr(args, "threads", None)      # the global ``geomatch --threads N``
    run_demo(args.out, quick=args.quick, seed=args.seed,
             progress=False if args.no_progress else None,
             threads=1 if threads is None else threads)
    return 0
