"""The mutations run by ``tools/mutate.py``: small, realistic bugs in the glue.

``MUTATIONS`` is a list of dicts with keys ``id``, ``file``, ``old`` (a snippet
that must occur exactly once), ``new`` (the bug), ``tests`` (the pytest
arguments that should catch it) and ``why`` (the class of bug).  They are
written below as a table, three lines a mutation::

    id | file | tests | why
    - old snippet
    + new snippet

``file`` is a path or one of the short names in ``_FILES``; ``tests`` is a
space-separated list of test paths and names of the groups in ``_TESTS``; a
``\\n`` in a snippet stands for a newline; lines starting with ``#`` are
comments.  Keep snippets short so that unrelated edits do not make them stale;
``tools/mutate.py`` reports stale ones.
"""

_FILES = {
    "M": "geomatch/eval/metrics.py", "C": "geomatch/data/cache.py",
    "T": "geomatch/model/train.py", "E": "geomatch/eval/evaluate.py",
    "H": "geomatch/model/head.py", "O": "geomatch/model/optim.py",
    "P": "geomatch/backbone/preprocess.py", "S": "geomatch/data/spair.py",
    "TB": "geomatch/data/tables.py", "SG": "geomatch/eval/segmentation.py",
    "PP": "geomatch/data/pascalparts.py", "G": "geomatch/geometry.py",
}

GLUE = ["tests/test_glue_geometry.py", "tests/test_glue_references.py",
        "tests/test_metrics_published.py"]
T_METRICS = ["tests/test_metrics.py", "tests/test_evaluate.py"] + GLUE
T_CACHE = ["tests/test_cache.py"] + GLUE
T_TRAIN = ["tests/test_train.py", "tests/test_loss.py"] + GLUE
T_DATA = ["tests/test_datasets.py", "tests/test_datasets_tables.py"]
T_SEG = ["tests/test_segmentation.py", "tests/test_pascalparts.py"]
_TESTS = {"GLUE": GLUE, "T_METRICS": T_METRICS, "T_CACHE": T_CACHE, "T_TRAIN": T_TRAIN,
          "T_DATA": T_DATA, "T_SEG": T_SEG}

_TABLE = r"""
# ---- metrics
metrics-le-to-lt | M | T_METRICS | boundary d == alpha*T
- (ratio[None] <= a.reshape(
+ (ratio[None] < a.reshape(
metrics-within-le-to-lt | M | T_METRICS | boundary in the breakdown
- (d[None, :] <= a[:, None])
+ (d[None, :] < a[:, None])
metrics-bbox-threshold-min | M | T_METRICS | threshold from the source box
- return float(bbox_threshold(pair.trg.bbox))
+ return float(bbox_threshold(pair.src.bbox))
metrics-image-threshold-src | M | T_METRICS | threshold from the source image
- return float(image_threshold(pair.trg.size))
+ return float(image_threshold(pair.src.size))
metrics-c10-drops-has-cp | M | T_METRICS | geometry group definition
- c10 = sv & tv & has_cp & ~cp_vis
+ c10 = sv & tv & ~cp_vis
metrics-11-tilde | M | T_METRICS | breakdown count
- "11_tilde": count_a(ok & near_cp & c11)
+ "11_tilde": count_a(near_cp & c11)
metrics-01-bar | M | T_METRICS | breakdown count
- "01_bar": count_a(near_cp & c01)
+ "01_bar": count_a(near_cp & c00)
metrics-cp-vis | M | T_METRICS | twin visible in the wrong image
- cp_vis = tv[perm] & has_cp
+ cp_vis = sv[perm] & has_cp
metrics-pck-image-median | M | T_METRICS | per-image PCK aggregated with the median
- "pck_image": np.mean(per_image, axis=0).tolist()
+ "pck_image": np.median(per_image, axis=0).tolist()
# ---- cache
cache-ignore-weights-sha | C | T_CACHE | manifest field not compared
- _IGNORED_IN_COMPARISON = ("geomatch_version",)
+ _IGNORED_IN_COMPARISON = ("geomatch_version", "weights_sha256")
cache-get-no-dtype-check | C | T_CACHE | get() ignores dtype
- if arr.shape != self.shape or arr.dtype != self.dtype:
+ if arr.shape != self.shape:
cache-put-no-finite-check | C | T_CACHE | non-finite features stored
- if not np.all(np.isfinite(out)):
+ if False:
cache-pad-offset-rounding | G | T_CACHE tests/test_backbone_extract.py tests/test_evaluate.py | pad offset rounding
- return (nw, nh), (0, (size - nh) // 2)
+ return (nw, nh), (0, (size - nh + 1) // 2)
cache-pad-long-side | G | T_CACHE tests/test_evaluate.py | pad frame size
- long_side = max(w, h)
+ long_side = min(w, h)
# ---- preprocessing
preprocess-pad-offset | G | tests/test_backbone_extract.py tests/test_backbone.py tests/test_geometry.py GLUE | pad offset of the pixels
- return (nw, nh), ((size - nw) // 2, 0)
+ return (nw, nh), ((size - nw + 1) // 2, 0)
# ---- train
train-flip-W-minus-x | G | T_TRAIN | flip rule off by one
-     if pixel_index:\n        return width - 1 - x\n
+     if pixel_index:\n        return width - x\n
train-flip-no-relabel | T | T_TRAIN | flip without left/right relabelling
- kps, vis = kps[perm], vis[perm]
+ kps, vis = kps, vis
train-mask-flip | G | T_TRAIN | flipped foreground mask off by one
- xs = flip_x(xs, W, pixel_index=True)
+ xs = flip_x(xs, W, pixel_index=False)
# ---- evaluate
evaluate-trg-frame-from-src | E | tests/test_evaluate.py GLUE | target frame from the source image size
- tx0, ty0, tfw, tfh = grid_frame(trg_size, manifest)
+ tx0, ty0, tfw, tfh = grid_frame(src_size, manifest)
# ---- head / optimizer
head-ln-eps | H | tests/test_head.py tests/test_glue_references.py | LayerNorm eps
- ln_eps: float = 1e-5
+ ln_eps: float = 1e-6
head-pos-half-offset | H | tests/test_head.py tests/test_glue_references.py | positional embedding convention
- r = (np.arange(h) + 0.5) / h
+ r = np.arange(h) / h
optim-weight-decay-coupled | O | tests/test_glue_references.py tests/test_train.py | weight decay scale
- p *= p.dtype.type(1.0 - lr * self.weight_decay)
+ p *= p.dtype.type(1.0 - self.weight_decay)
optim-bias-correction | O | tests/test_glue_references.py tests/test_train.py | bias correction
- bc2 = 1.0 - b2 ** self.t
+ bc2 = 1.0 - b2 ** (self.t + 1)
# ---- datasets
tables-flip-perm-identity | TB | T_DATA tests/test_metrics.py | left/right table not applied
- perm[i], perm[j] = j, i
+ perm[i], perm[j] = i, j
spair-pair-box-from-image | S | T_DATA | pair box ignored (image annotation box used)
- side[s] = dataclasses.replace(img, bbox=_ro(box))
+ side[s] = img
spair-kps-shift | S | T_DATA | half-pixel shift of keypoints
-         xy[k] = pt\n
+         xy[k] = pt + 0.5\n
spair-vis-not-set | S | T_DATA | visibility of keypoint 0 lost
-         vis[k] = True\n
+         vis[k] = k > 0\n
ap10k-vis-threshold | geomatch/data/ap10k.py | T_DATA | COCO visibility flag 1 dropped
- vis = raw[:, 2] > 0
+ vis = raw[:, 2] > 1
cub-bbox-width | geomatch/data/cub.py | T_DATA | CUB box read as corners
- (x, y, x + w, y + h)
+ (x, y, w, h)
cub-part-index | geomatch/data/cub.py | T_DATA | part ids off by one
- arr[pid - 1] = [
+ arr[pid % 15] = [
pfpascal-class-index | geomatch/data/pfpascal.py | T_DATA | class ids off by one
- "category": PFPASCAL_CLASSES[cls - 1]
+ "category": PFPASCAL_CLASSES[cls % 20]
cub-pairs-order | geomatch/data/cub.py | T_DATA | pair sampling changed
- r = flat % (n - 1)
+ r = (flat + 1) % (n - 1)
# ---- protocols (issue 11)
metrics-lt-to-le | M | tests/test_protocols.py | GeoAware-SC's strict test at d == alpha*T
- (d[None, :] < a[:, None] * t)
+ (d[None, :] <= a[:, None] * t)
transfer-corner-round | geomatch/ops/transfer.py | tests/test_protocols.py | GECO's corner pixel floors
- x = np.floor(c[..., 0].astype(np.float32) * sx)
+ x = np.round(c[..., 0].astype(np.float32) * sx)
select-first-n-off-by-one | E | tests/test_protocols.py | first N pairs per category
- if taken.get(p.category, 0) < n:
+ if taken.get(p.category, 0) <= n:
empty-pairs-always-skipped | geomatch/data/base.py | tests/test_protocols.py | GECO counts pairs without co-visible keypoints
- if not keep_empty and not np.any(
+ if not np.any(
test-flip-replaces-all | E | tests/test_protocols.py tests/test_pose_distance.py | only keypoints whose mirrored counterpart is co-visible take the flip
-     return (sv & tv)[perm] & tv & sv
+     return tv & sv
pose-distance-not-mutual | E | tests/test_protocols.py | mutual nearest neighbours only
- mutual = nn21[nn12] == np.arange(len(a))
+ mutual = np.ones(len(a), bool)
geo-image-per-point | M | tests/test_evaluate.py | per-image geometry-aware PCK over geo keypoints
- per_image_geo.append(r.n_geo_correct / r.n_geo)
+ per_image_geo.append(r.n_geo_correct / max(r.n_points, 1))
# ---- part segmentation on PASCAL-Part (geomatch/eval/segmentation.py and its data)
seg-gt-pixels-from-rows | SG | T_SEG | annotated pixels counted over predictions
- n_gt = np.where(allowed, c.sum(axis=0), 0.0)
+ n_gt = np.where(allowed, c.sum(axis=1), 0.0)
seg-precnorm-rows | SG | T_SEG | precnorm divides rows
- norm = sub / n_gt[keep][None, :]
+ norm = sub / n_gt[keep][:, None]
seg-keep-absent-classes | SG | T_SEG | classes never annotated kept
- keep = n_gt != 0
+ keep = n_gt >= 0
seg-geo-drops-background | SG | T_SEG | geo metrics without background
- np.concatenate([[True], o])
+ np.concatenate([[False], o])
seg-iou-union | SG | T_SEG | IoU union double counts
- union = c.sum(axis=1) + c.sum(axis=0) - d
+ union = c.sum(axis=1) + c.sum(axis=0)
seg-centroid-mean | SG | T_SEG | L2 instead of L1 centroid
- np.median(proj[order[a:b]], axis=0)
+ np.mean(proj[order[a:b]], axis=0)
seg-projection-unnormalised | SG | T_SEG | training projections not normalised
- proj = _unit_rows(_mm(x, comps.T))
+ proj = _mm(x, comps.T)
seg-absent-part-columns | SG | T_SEG | scores of absent parts shifted
- out[:, self.present] = s
+ out[:, :len(self.present)] = s
seg-training-seed | SG | T_SEG | training subset differs from GECO's
- np.random.RandomState(seed).permutation
+ np.random.RandomState(seed + 1).permutation
seg-foreground-threshold | SG | T_SEG | grid foreground rule
- fg = soft.sum(axis=-1) > 0\n
+ fg = soft.sum(axis=-1) > 0.5\n
seg-full-frame-axes | SG | T_SEG | frame axes swapped
- grid_to_image(H, h, y0, fh), grid_to_image(W, w, x0, fw)
+ grid_to_image(H, h, x0, fw), grid_to_image(W, w, y0, fh)
pascalparts-lowest-part-wins | PP | T_SEG | overlap rule
- for k in sorted(slots):
+ for k in sorted(slots, reverse=True):
pascalparts-train-quirk | PP | T_SEG | GECO's oriented train parts
- _GECO_NOT_ORIENTED = {"train": {70}}
+ _GECO_NOT_ORIENTED = {}
pascalparts-multi-object | PP | T_SEG | two-object images kept
- if len(objects) != 1:      # GECO
+ if len(objects) > 2:      # GECO
resample-no-clamp | geomatch/ops/resample.py | T_SEG | PyTorch's clamp of negative source coordinates
- s = np.maximum(np.asarray(src, dtype=np.float64).reshape(-1), 0.0)
+ s = np.asarray(src, dtype=np.float64).reshape(-1)
# ---- bf16 backbone
bf16-engine-name | geomatch/backbone/dinov2.py | tests/test_bf16.py | bf16 features would share a cache with float32 ones
- return "c" if self.precision == "float32" else "c-" + self.precision
+ return "c"
bf16-spec-drops-precision | geomatch/backbone/extract.py | tests/test_bf16.py | Dask workers would compute float32 for a bf16 run
- lora=self.lora,\n                           precision=self.compute_dtype)
+ lora=self.lora)
bf16-cli-alias | geomatch/backbone/extract.py | tests/test_bf16.py | --precision bf16 not mapped to the C engine's bfloat16
- precision = "bfloat16" if args.precision == "bf16" else args.precision
+ precision = args.precision
bf16-attention-in-float32 | geomatch/backbone/dinov2.py | tests/test_bf16.py | the bf16 model would run float32 attention
- attention = core.nn_attention_bf16 if (self.precision == "bfloat16"
+ attention = core.nn_attention_bf16 if (self.precision == "float16"
"""


def _snippet(line: str, sign: str) -> str:
    if not line.startswith(sign + " "):
        raise ValueError(f"mutations table: expected a line starting with {sign!r}, got {line!r}")
    return line[2:].replace("\\n", "\n")


def _parse(table: str) -> list:
    lines = [ln for ln in table.splitlines() if ln and not ln.startswith("#")]
    out = []
    for i in range(0, len(lines), 3):
        ident, file, tests, why = (f.strip() for f in lines[i].split(" | "))
        out.append(dict(id=ident, file=_FILES.get(file, file),
                        old=_snippet(lines[i + 1], "-"), new=_snippet(lines[i + 2], "+"),
                        tests=[t for tok in tests.split() for t in _TESTS.get(tok, [tok])],
                        why=why))
    return out


MUTATIONS = _parse(_TABLE)
