"""geomatch.geometry: the coordinate conventions, pinned with numbers worked out by hand.

Every expected value below is written out from the conventions of
docs/method.md#coordinates (the arithmetic is in the comments), never
computed by the code under test.
"""
import numpy as np
import pytest

import geomatch as gm
from geomatch import geometry as G


# --- pad maths -----------------------------------------------------------------

def test_pad_geometry_landscape_and_portrait():
    # 500x375 into 840: the width is the long side; 840*375/500 = 630, offset (840-630)//2
    assert G.pad_geometry(500, 375, 840) == ((840, 630), (0, 105))
    # 300x451: 840*300/451 = 558.76 -> 559, offset (840-559)//2 = 140
    assert G.pad_geometry(300, 451, 840) == ((559, 840), (140, 0))
    # square: no padding
    assert G.pad_geometry(64, 64, 840) == ((840, 840), (0, 0))


def test_pad_geometry_rounds_half_to_even():
    # 8*7/16 = 3.5 -> 4 (even), 8*5/16 = 2.5 -> 2 (even), 8*9/16 = 4.5 -> 4
    assert G.pad_geometry(16, 7, 8) == ((8, 4), (0, 2))
    assert G.pad_geometry(16, 5, 8) == ((8, 2), (0, 3))
    assert G.pad_geometry(16, 9, 8) == ((8, 4), (0, 2))


def test_grid_frame_region_by_hand():
    # resize: the whole image
    assert G.grid_frame((640, 480), {"preprocess": "resize", "resolution": [518, 518]}) \
        == (0.0, 0.0, 640.0, 480.0)
    # pad, (16, 5) into 8: scale 8/16 = 0.5, offset y 3 input px = 6 image px
    assert G.grid_frame((16, 5), {"preprocess": "pad", "resolution": [8, 8]}) \
        == (0.0, -6.0, 16.0, 16.0)
    # pad, portrait (20, 56) into 28: scale 0.5, width 10, offset x (28-10)//2 = 9 -> 18
    assert G.grid_frame((20, 56), {"preprocess": "pad", "resolution": [28, 28]}) \
        == (-18.0, 0.0, 56.0, 56.0)


def test_grid_frame_is_reexported_where_users_found_it():
    from geomatch.backbone.preprocess import Frame, make_frame
    from geomatch.data.cache import grid_frame

    assert grid_frame is G.grid_frame
    assert make_frame is G.make_frame and Frame is G.Frame
    assert gm.backbone.make_frame is G.make_frame


# --- frames ----------------------------------------------------------------------

def test_make_frame_pad_landscape_to_input_and_flip():
    # (56, 20) into 28 with patch 14: scale 0.5, height 10, offset y (28-10)//2 = 9
    f = G.make_frame((56, 20), "pad", 28)
    assert f.scale == (0.5, 0.5) and f.offset == (0.0, 9.0) and f.grid == (2, 2)
    assert f.region == (0.0, -18.0, 56.0, 56.0)
    # off-centre point (10, 4) -> (5, 2 + 9); border (56, 20) -> (28, 19)
    np.testing.assert_array_equal(f.to_input([[10, 4], [56, 20], [0, 0]]),
                                  [[5, 11], [28, 19], [0, 9]])
    # flipped input: continuous x -> 28 - x
    ff = f.flip()
    np.testing.assert_array_equal(ff.to_input([[10, 4], [56, 20], [0, 0]]),
                                  [[23, 11], [0, 19], [28, 9]])
    np.testing.assert_array_equal(ff.to_image([[23, 11]]), [[10, 4]])
    assert ff.region == f.region


def test_make_frame_pad_portrait_and_resize():
    # (20, 56) into 28: width 10, offset x 9; (2, 4) -> (1 + 9, 2); flipped x -> 28 - 10
    f = G.make_frame((20, 56), "pad", 28)
    np.testing.assert_array_equal(f.to_input([[2, 4]]), [[10, 2]])
    np.testing.assert_array_equal(f.flip().to_input([[2, 4]]), [[18, 2]])
    # resize (40, 20) into 42: scale (42/40, 42/20); (20, 10) -> (21, 21)
    r = G.make_frame((40, 20), "resize", 42)
    np.testing.assert_allclose(r.to_input([[20, 10], [40, 20]]), [[21, 21], [42, 42]])
    assert r.region == (0.0, 0.0, 40.0, 20.0)


def test_frame_without_stored_region_derives_it():
    f = G.Frame((100, 50), (28, 28), (0.28, 0.28), (0.0, 7.0))
    np.testing.assert_allclose(f.region, (0.0, -25.0, 100.0, 100.0))


# --- the flip rule ---------------------------------------------------------------

def test_flip_x_pixel_index_and_continuous():
    assert G.flip_x(0, 10, pixel_index=True) == 9
    assert G.flip_x(9, 10, pixel_index=True) == 0
    assert G.flip_x(0.0, 10, pixel_index=False) == 10.0
    assert G.flip_x(2.5, 10, pixel_index=False) == 7.5
    np.testing.assert_array_equal(G.flip_x(np.array([0, 3, 7]), 8, pixel_index=True), [7, 4, 0])


def test_pixel_flip_mirrors_patches_exactly():
    # W = 28 pixels, w = 2 patches of 14: pixel column j is in patch j // 14; the
    # mirrored pixel 27 - j must be in the mirrored patch 1 - j // 14 for every j.
    # (The continuous rule 28 - j would send j = 14 to 14, patch 1 -- unmirrored.)
    j = np.arange(28, dtype=np.float64)
    _, c = G.patch_index(j, np.zeros(28), 28.0, 14.0, 2, 1)
    _, cf = G.patch_index(G.flip_x(j, 28.0, pixel_index=True), np.zeros(28), 28.0, 14.0, 2, 1)
    np.testing.assert_array_equal(c, [0] * 14 + [1] * 14)
    np.testing.assert_array_equal(cf, [1] * 14 + [0] * 14)


# --- keypoints <-> patches -----------------------------------------------------

def test_keypoint_patches_off_centre_and_border():
    # image (W, H) = (100, 50), grid (h, w) = (5, 4): patches 25 px wide, 10 px high
    kps = np.array([[0, 0],          # corner -> (0, 0) -> 0
                    [24.99, 9.99],   # just inside the first patch -> 0
                    [25, 10],        # first pixel of patch (1, 1) -> 5
                    [60.5, 31.2],    # (floor(3.12), floor(2.42)) = (3, 2) -> 14
                    [99, 49],        # last pixel -> (4, 3) -> 19
                    [100, 50],       # on the far border: clamped -> 19
                    [np.nan, np.nan]])
    vis = np.array([1, 1, 1, 1, 1, 1, 0], bool)
    np.testing.assert_array_equal(G.keypoint_patches(kps, vis, (100, 50), (5, 4)),
                                  [0, 0, 5, 14, 19, 19, -1])
    # the loss module re-exports the same function
    from geomatch.model import loss

    assert loss.keypoint_patches is G.keypoint_patches


def test_patch_centers_align_corners_false():
    # w = 4 over W = 100: j -> (j + 0.5) * 25 - 0.5; h = 5 over H = 50: i -> (i + 0.5) * 10 - 0.5
    out = G.patch_centers(np.array([[0, 0], [3, 4], [1.25, 2.0]]), 100.0, 50.0, 4, 5)
    np.testing.assert_array_equal(out, [[12.0, 4.5], [87.0, 44.5], [43.25, 24.5]])
    # finer grid than image: (0.5 * 2/3 - 0.5) = -0.17 -> 0, (2.5 * 2/3 - 0.5) = 1.17 -> 1
    out = G.patch_centers(np.array([[0, 0], [2, 2]]), 2.0, 2.0, 3, 3)
    np.testing.assert_array_equal(out, [[0, 0], [1, 1]])


def test_grid_transfer_between_images_of_different_sizes():
    # source (W, H) = (100, 50) on a (5, 4) grid; keypoint (60.5, 31.2) is patch (3, 2).
    # target (W, H) = (30, 80) on a (2, 3) grid; its only match is patch (1, 0), whose
    # centre is x = 0.5 * 30/3 - 0.5 = 4.5, y = 1.5 * 80/2 - 0.5 = 59.5.
    src = np.zeros((5, 4, 8), np.float32)
    src[..., 1] = 1
    src[3, 2] = np.eye(8)[0]
    trg = np.zeros((2, 3, 8), np.float32)
    trg[..., 1] = 1
    trg[1, 0] = np.eye(8)[0]
    out = gm.transfer_keypoints(src, trg, np.array([[60.5, 31.2]], np.float32), (100, 50),
                                (30, 80), mode="grid-argmax")
    np.testing.assert_array_equal(out, [[4.5, 59.5]])


# --- foreground ------------------------------------------------------------------

def test_foreground_grid_whole_image_bbox_and_flip():
    # (W, H) = (12, 8), grid (4, 4): columns sample x = 0, 3, 6, 9; rows y = 0, 2, 4, 6
    fg = G.foreground_grid((4, 4), (12, 8), bbox=(0, 0, 4, 7))
    np.testing.assert_array_equal(fg, np.tile([True, True, False, False], (4, 1)))
    # flipped: the columns sample x = 11, 8, 5, 2 -> only the last is in [0, 4]
    fg = G.foreground_grid((4, 4), (12, 8), bbox=(0, 0, 4, 7), flipped=True)
    np.testing.assert_array_equal(fg, np.tile([False, False, False, True], (4, 1)))


def test_foreground_grid_pad_region_marks_padding_background():
    # (W, H) = (8, 4) padded into 8: region (0, -2, 8, 8); grid (4, 4) samples
    # x = 0, 2, 4, 6 and y = -2, 0, 2, 4: rows 0 and 3 lie in the padding
    region = G.grid_frame((8, 4), {"preprocess": "pad", "resolution": [8, 8]})
    assert region == (0.0, -2.0, 8.0, 8.0)
    expect = np.zeros((4, 4), bool)
    expect[1:3] = True
    np.testing.assert_array_equal(
        G.foreground_grid((4, 4), (8, 4), mask=np.ones((4, 8)), region=region), expect)
    # bbox x in [0, 2]: columns x = 0, 2; flipped they sample 7, 5, 3, 1 -> column 3
    expect = np.zeros((4, 4), bool)
    expect[1:3, :2] = True
    np.testing.assert_array_equal(
        G.foreground_grid((4, 4), (8, 4), bbox=(0, 0, 2, 3), region=region), expect)
    expect = np.zeros((4, 4), bool)
    expect[1:3, 3] = True
    np.testing.assert_array_equal(
        G.foreground_grid((4, 4), (8, 4), bbox=(0, 0, 2, 3), region=region, flipped=True),
        expect)


def test_foreground_grid_bad_input_names_it():
    with pytest.raises(ValueError, match="mask has shape"):
        G.foreground_grid((2, 2), (4, 4), mask=np.ones((3, 3)))
    with pytest.raises(ValueError, match="needs a mask or a bbox"):
        G.foreground_grid((2, 2), (4, 4))
    with pytest.raises(ValueError, match="preprocess"):
        G.grid_frame((4, 4), {"preprocess": "crop"})
    with pytest.raises(ValueError, match="image_size"):
        G.make_frame((0, 4))


@pytest.mark.parametrize("size", [(500, 375), (300, 451), (16, 7), (64, 64), (41, 1000)])
@pytest.mark.parametrize("mode,S", [("resize", 518), ("pad", 840), ("pad", 98)])
def test_one_frame_representation(size, mode, S):
    # the cache's region tuple is the region of the preprocessing Frame, exactly
    f = G.make_frame(size, mode, S)
    assert f.region == G.grid_frame(size, {"preprocess": mode, "resolution": [S, S]})
    # and the frame maps the region's corners onto the input's corners
    x0, y0, fw, fh = f.region
    np.testing.assert_allclose(f.to_input([[x0, y0], [x0 + fw, y0 + fh]]), [[0, 0], [S, S]],
                               atol=1e-9)
