"""The mutations run by ``tools/mutate.py``: small, realistic bugs in the glue.

Each entry: ``id``, ``file``, ``old`` (a snippet that must occur exactly once),
``new`` (the bug), ``tests`` (the pytest arguments that should catch it) and
``why`` (the class of bug).  Keep snippets short so that unrelated edits do
not make them stale; ``tools/mutate.py`` reports stale ones.
"""

_M = "geomatch/eval/metrics.py"
_C = "geomatch/data/cache.py"
_T = "geomatch/model/train.py"
_E = "geomatch/eval/evaluate.py"
_H = "geomatch/model/head.py"
_O = "geomatch/model/optim.py"
_P = "geomatch/backbone/preprocess.py"
_S = "geomatch/data/spair.py"
_TB = "geomatch/data/tables.py"
_G = "geomatch/geometry.py"

GLUE = ["tests/test_glue_geometry.py", "tests/test_glue_references.py",
        "tests/test_metrics_published.py"]
T_METRICS = ["tests/test_metrics.py", "tests/test_evaluate.py"] + GLUE
T_CACHE = ["tests/test_cache.py"] + GLUE
T_TRAIN = ["tests/test_train.py", "tests/test_loss.py"] + GLUE
T_DATA = ["tests/test_datasets.py", "tests/test_datasets_tables.py"]

MUTATIONS = [
    # ---- metrics
    dict(id="metrics-le-to-lt", file=_M, old="(ratio[None] <= a.reshape(",
         new="(ratio[None] < a.reshape(", tests=T_METRICS, why="boundary d == alpha*T"),
    dict(id="metrics-within-le-to-lt", file=_M, old="(d[None, :] <= a[:, None])",
         new="(d[None, :] < a[:, None])", tests=T_METRICS, why="boundary in the breakdown"),
    dict(id="metrics-bbox-threshold-min", file=_M, old="return float(bbox_threshold(pair.trg.bbox))",
         new="return float(bbox_threshold(pair.src.bbox))", tests=T_METRICS,
         why="threshold from the source box"),
    dict(id="metrics-image-threshold-src", file=_M, old="return float(image_threshold(pair.trg.size))",
         new="return float(image_threshold(pair.src.size))", tests=T_METRICS,
         why="threshold from the source image"),
    dict(id="metrics-c10-drops-has-cp", file=_M, old="c10 = sv & tv & has_cp & ~cp_vis",
         new="c10 = sv & tv & ~cp_vis", tests=T_METRICS, why="geometry group definition"),
    dict(id="metrics-11-tilde", file=_M, old='"11_tilde": count_a(ok & near_cp & c11)',
         new='"11_tilde": count_a(near_cp & c11)', tests=T_METRICS, why="breakdown count"),
    dict(id="metrics-01-bar", file=_M, old='"01_bar": count_a(near_cp & c01)',
         new='"01_bar": count_a(near_cp & c00)', tests=T_METRICS, why="breakdown count"),
    dict(id="metrics-cp-vis", file=_M, old="cp_vis = tv[perm] & has_cp",
         new="cp_vis = sv[perm] & has_cp", tests=T_METRICS, why="twin visible in the wrong image"),
    dict(id="metrics-pck-image-median", file=_M,
         old='"pck_image": np.mean(per_image, axis=0).tolist()',
         new='"pck_image": np.median(per_image, axis=0).tolist()', tests=T_METRICS,
         why="per-image PCK aggregated with the median"),
    # ---- cache
    dict(id="cache-ignore-weights-sha", file=_C,
         old='_IGNORED_IN_COMPARISON = ("geomatch_version",)',
         new='_IGNORED_IN_COMPARISON = ("geomatch_version", "weights_sha256")', tests=T_CACHE,
         why="manifest field not compared"),
    dict(id="cache-get-no-dtype-check", file=_C,
         old="if arr.shape != self.shape or arr.dtype != self.dtype:",
         new="if arr.shape != self.shape:", tests=T_CACHE, why="get() ignores dtype"),
    dict(id="cache-put-no-finite-check", file=_C, old="if not np.all(np.isfinite(out)):",
         new="if False:", tests=T_CACHE, why="non-finite features stored"),
    dict(id="cache-pad-offset-rounding", file=_G, old="return (nw, nh), (0, (size - nh) // 2)",
         new="return (nw, nh), (0, (size - nh + 1) // 2)", tests=T_CACHE + ["tests/test_backbone_extract.py",
                                                              "tests/test_evaluate.py"],
         why="pad offset rounding"),
    dict(id="cache-pad-long-side", file=_G, old="long_side = max(w, h)", new="long_side = min(w, h)",
         tests=T_CACHE + ["tests/test_evaluate.py"], why="pad frame size"),
    # ---- preprocessing
    dict(id="preprocess-pad-offset", file=_G, old="return (nw, nh), ((size - nw) // 2, 0)",
         new="return (nw, nh), ((size - nw + 1) // 2, 0)", tests=["tests/test_backbone_extract.py",
                                                                  "tests/test_backbone.py", "tests/test_geometry.py"] + GLUE,
         why="pad offset of the pixels"),
    # ---- train
    dict(id="train-flip-W-minus-x", file=_G, old="    if pixel_index:\n        return width - 1 - x\n",
         new="    if pixel_index:\n        return width - x\n", tests=T_TRAIN, why="flip rule off by one"),
    dict(id="train-flip-no-relabel", file=_T, old="kps, vis = kps[perm], vis[perm]",
         new="kps, vis = kps, vis", tests=T_TRAIN, why="flip without left/right relabelling"),
    dict(id="train-mask-flip", file=_G, old="xs = flip_x(xs, W, pixel_index=True)", new="xs = flip_x(xs, W, pixel_index=False)",
         tests=T_TRAIN, why="flipped foreground mask off by one"),
    # ---- evaluate
    dict(id="evaluate-trg-frame-from-src", file=_E,
         old="tx0, ty0, tfw, tfh = grid_frame(trg_size, manifest)",
         new="tx0, ty0, tfw, tfh = grid_frame(src_size, manifest)",
         tests=["tests/test_evaluate.py"] + GLUE, why="target frame from the source image size"),
    # ---- head / optimizer
    dict(id="head-ln-eps", file=_H, old="ln_eps: float = 1e-5", new="ln_eps: float = 1e-6",
         tests=["tests/test_head.py", "tests/test_glue_references.py"], why="LayerNorm eps"),
    dict(id="head-pos-half-offset", file=_H, old="r = (np.arange(h) + 0.5) / h",
         new="r = np.arange(h) / h", tests=["tests/test_head.py", "tests/test_glue_references.py"],
         why="positional embedding convention"),
    dict(id="optim-weight-decay-coupled", file=_O,
         old="p *= p.dtype.type(1.0 - lr * self.weight_decay)",
         new="p *= p.dtype.type(1.0 - self.weight_decay)",
         tests=["tests/test_glue_references.py", "tests/test_train.py"], why="weight decay scale"),
    dict(id="optim-bias-correction", file=_O, old="bc2 = 1.0 - b2 ** self.t",
         new="bc2 = 1.0 - b2 ** (self.t + 1)",
         tests=["tests/test_glue_references.py", "tests/test_train.py"], why="bias correction"),
    # ---- datasets
    dict(id="tables-flip-perm-identity", file=_TB, old="perm[i], perm[j] = j, i",
         new="perm[i], perm[j] = i, j", tests=T_DATA + ["tests/test_metrics.py"],
         why="left/right table not applied"),
    dict(id="spair-pair-box-from-image", file=_S, old="side[s] = dataclasses.replace(img, bbox=_ro(box))",
         new="side[s] = img", tests=T_DATA, why="pair box ignored (image annotation box used)"),
    dict(id="spair-kps-shift", file=_S, old="        xy[k] = pt\n", new="        xy[k] = pt + 0.5\n",
         tests=T_DATA, why="half-pixel shift of keypoints"),
    dict(id="spair-vis-not-set", file=_S, old="        vis[k] = True\n", new="        vis[k] = k > 0\n",
         tests=T_DATA, why="visibility of keypoint 0 lost"),
    dict(id="ap10k-vis-threshold", file="geomatch/data/ap10k.py", old="vis = raw[:, 2] > 0",
         new="vis = raw[:, 2] > 1", tests=T_DATA, why="COCO visibility flag 1 dropped"),
    dict(id="cub-bbox-width", file="geomatch/data/cub.py", old="(x, y, x + w, y + h)",
         new="(x, y, w, h)", tests=T_DATA, why="CUB box read as corners"),
    dict(id="cub-part-index", file="geomatch/data/cub.py", old="arr[pid - 1] = [",
         new="arr[pid % 15] = [", tests=T_DATA, why="part ids off by one"),
    dict(id="pfpascal-class-index", file="geomatch/data/pfpascal.py",
         old='"category": PFPASCAL_CLASSES[cls - 1]', new='"category": PFPASCAL_CLASSES[cls % 20]',
         tests=T_DATA, why="class ids off by one"),
    dict(id="cub-pairs-order", file="geomatch/data/cub.py", old="r = flat % (n - 1)",
         new="r = (flat + 1) % (n - 1)", tests=T_DATA, why="pair sampling changed"),
    # ---- protocols (issue 11)
    dict(id="metrics-lt-to-le", file=_M, old="(d[None, :] < a[:, None] * t)",
         new="(d[None, :] <= a[:, None] * t)", tests=["tests/test_protocols.py"],
         why="GeoAware-SC's strict test at d == alpha*T"),
    dict(id="transfer-corner-round", file="geomatch/ops/transfer.py",
         old="x = np.floor(c[..., 0].astype(np.float32) * sx)",
         new="x = np.round(c[..., 0].astype(np.float32) * sx)",
         tests=["tests/test_protocols.py"], why="GECO's corner pixel floors"),
    dict(id="select-first-n-off-by-one", file=_E, old="if taken.get(p.category, 0) < n:",
         new="if taken.get(p.category, 0) <= n:", tests=["tests/test_protocols.py"],
         why="first N pairs per category"),
    dict(id="empty-pairs-always-skipped", file="geomatch/data/base.py",
         old="if not keep_empty and not np.any(", new="if not np.any(",
         tests=["tests/test_protocols.py"], why="GECO counts pairs without co-visible keypoints"),
    dict(id="test-flip-replaces-all", file=_E, old="use = (sv & tv)[perm] & tv & sv",
         new="use = tv & sv", tests=["tests/test_protocols.py"],
         why="only keypoints whose mirrored counterpart is co-visible take the flip"),
    dict(id="pose-distance-not-mutual", file=_E, old="mutual = nn21[nn12] == np.arange(len(a))",
         new="mutual = np.ones(len(a), bool)", tests=["tests/test_protocols.py"],
         why="mutual nearest neighbours only"),
    dict(id="geo-image-per-point", file=_M, old="per_image_geo.append(r.n_geo_correct / r.n_geo)",
         new="per_image_geo.append(r.n_geo_correct / max(r.n_points, 1))",
         tests=["tests/test_evaluate.py"], why="per-image geometry-aware PCK over geo keypoints"),
]

# ---- part segmentation on PASCAL-Part (geomatch/eval/segmentation.py and its data)
_SG = "geomatch/eval/segmentation.py"
_PP = "geomatch/data/pascalparts.py"
T_SEG = ["tests/test_segmentation.py", "tests/test_pascalparts.py"]
MUTATIONS += [
    dict(id="seg-gt-pixels-from-rows", file=_SG, old="n_gt = np.where(allowed, c.sum(axis=0), 0.0)",
         new="n_gt = np.where(allowed, c.sum(axis=1), 0.0)", tests=T_SEG,
         why="annotated pixels counted over predictions"),
    dict(id="seg-precnorm-rows", file=_SG, old="norm = sub / n_gt[keep][None, :]",
         new="norm = sub / n_gt[keep][:, None]", tests=T_SEG, why="precnorm divides rows"),
    dict(id="seg-keep-absent-classes", file=_SG, old="keep = n_gt != 0", new="keep = n_gt >= 0",
         tests=T_SEG, why="classes never annotated kept"),
    dict(id="seg-geo-drops-background", file=_SG, old="np.concatenate([[True], o])",
         new="np.concatenate([[False], o])", tests=T_SEG, why="geo metrics without background"),
    dict(id="seg-iou-union", file=_SG, old="union = c.sum(axis=1) + c.sum(axis=0) - d",
         new="union = c.sum(axis=1) + c.sum(axis=0)", tests=T_SEG, why="IoU union double counts"),
    dict(id="seg-centroid-mean", file=_SG, old="np.median(proj[order[a:b]], axis=0)",
         new="np.mean(proj[order[a:b]], axis=0)", tests=T_SEG, why="L2 instead of L1 centroid"),
    dict(id="seg-projection-unnormalised", file=_SG, old="proj = _unit_rows(_mm(x, comps.T))",
         new="proj = _mm(x, comps.T)", tests=T_SEG, why="training projections not normalised"),
    dict(id="seg-absent-part-columns", file=_SG, old="out[:, self.present] = s",
         new="out[:, :len(self.present)] = s", tests=T_SEG, why="scores of absent parts shifted"),
    dict(id="seg-training-seed", file=_SG, old="np.random.RandomState(seed).permutation",
         new="np.random.RandomState(seed + 1).permutation", tests=T_SEG,
         why="training subset differs from GECO's"),
    dict(id="seg-foreground-threshold", file=_SG, old="fg = soft.sum(axis=-1) > 0\n",
         new="fg = soft.sum(axis=-1) > 0.5\n", tests=T_SEG, why="grid foreground rule"),
    dict(id="seg-full-frame-axes", file=_SG,
         old="grid_to_image(H, h, y0, fh), grid_to_image(W, w, x0, fw)",
         new="grid_to_image(H, h, x0, fw), grid_to_image(W, w, y0, fh)", tests=T_SEG,
         why="frame axes swapped"),
    dict(id="pascalparts-lowest-part-wins", file=_PP, old="for k in sorted(slots):",
         new="for k in sorted(slots, reverse=True):", tests=T_SEG, why="overlap rule"),
    dict(id="pascalparts-train-quirk", file=_PP, old='_GECO_NOT_ORIENTED = {"train": {70}}',
         new="_GECO_NOT_ORIENTED = {}", tests=T_SEG, why="GECO's oriented train parts"),
    dict(id="pascalparts-multi-object", file=_PP, old="if len(objects) != 1:      # GECO",
         new="if len(objects) > 2:      # GECO", tests=T_SEG, why="two-object images kept"),
    dict(id="resample-no-clamp", file="geomatch/ops/resample.py",
         old="s = np.maximum(np.asarray(src, dtype=np.float64).reshape(-1), 0.0)",
         new="s = np.asarray(src, dtype=np.float64).reshape(-1)", tests=T_SEG,
         why="PyTorch's clamp of negative source coordinates"),
dict(id="bf16-engine-name", file="geomatch/backbone/dinov2.py",
         old='return "c" if self.precision == "float32" else "c-" + self.precision',
         new='return "c"', tests=["tests/test_bf16.py"],
         why="bf16 features would share a cache with float32 ones"),
    dict(id="bf16-spec-drops-precision", file="geomatch/backbone/extract.py",
         old="lora=self.lora,\n                           precision=self.compute_dtype)",
         new="lora=self.lora)", tests=["tests/test_bf16.py"],
         why="Dask workers would compute float32 for a bf16 run"),
    dict(id="bf16-cli-alias", file="geomatch/backbone/extract.py",
         old='precision = "bfloat16" if args.precision == "bf16" else args.precision',
         new="precision = args.precision", tests=["tests/test_bf16.py"],
         why="--precision bf16 not mapped to the C engine's bfloat16"),
    dict(id="bf16-attention-in-float32", file="geomatch/backbone/dinov2.py",
         old='attention = core.nn_attention_bf16 if (self.precision == "bfloat16"',
         new='attention = core.nn_attention_bf16 if (self.precision == "float16"',
         tests=["tests/test_bf16.py"], why="the bf16 model would run float32 attention"),
]
