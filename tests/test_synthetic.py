"""voslab.data.synthetic: determinism, exact flow, distractors, late entries, the DAVIS layout, the cache."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from voslab.data import io, synthetic
from voslab.errors import VOSDataError

SIZE = (64, 96)


@pytest.fixture(scope="module")
def videos():
    """A few default-difficulty videos, rendered once for the module."""
    return [synthetic.render_video(seed, n_frames=8, size=SIZE, difficulty=1.0) for seed in range(4)]


def warp_back(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """out(p) = image(p + flow(p)), bilinear. (H, W, 3) float32."""
    h, w = flow.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return cv2.remap(image, xs + flow[..., 0], ys + flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def away_from_edges(instances: np.ndarray) -> np.ndarray:
    """False on the 1-pixel band around object boundaries (anti-aliased, mixed colours)."""
    return cv2.morphologyEx(instances, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) == 0


def test_shapes_and_dtypes(videos):
    v = videos[0]
    t, (h, w) = 8, SIZE
    assert v["frames"].shape == (t, h, w, 3) and v["frames"].dtype == np.uint8
    assert v["instances"].shape == (t, h, w) and v["instances"].dtype == np.uint8
    assert v["foreground"].shape == (t, h, w) and set(np.unique(v["foreground"])) <= {0, 1}
    for key in ("flow_forward", "flow_backward"):
        assert v[key].shape == (t, h, w, 2) and v[key].dtype == np.float32
    ids = sorted(o["id"] for o in v["objects"])
    assert ids == list(range(1, len(ids) + 1))
    assert set(np.unique(v["instances"])) <= {0, *ids}


def test_same_seed_same_bytes_and_different_seeds_differ():
    a = synthetic.render_video(7, n_frames=4, size=SIZE)
    b = synthetic.render_video(7, n_frames=4, size=SIZE)
    c = synthetic.render_video(8, n_frames=4, size=SIZE)
    for key in ("frames", "instances", "flow_forward", "flow_backward"):
        assert a[key].tobytes() == b[key].tobytes()
    assert a["objects"] == b["objects"]
    assert not np.array_equal(a["frames"], c["frames"])


def test_splits_use_disjoint_seeds():
    train = {synthetic.video_seed(0, "train", i) for i in range(200)}
    val = {synthetic.video_seed(0, "val", i) for i in range(200)}
    assert not train & val and len(train) == 200
    assert synthetic.video_seed(0, "train", 3) != synthetic.video_seed(1, "train", 3)


def test_foreground_is_exactly_the_moving_objects(videos):
    for v in videos:
        moving = [o["id"] for o in v["objects"] if o["kind"] == "moving"]
        assert moving, "every video has at least one primary object"
        np.testing.assert_array_equal(v["foreground"], np.isin(v["instances"], moving))
        assert v["foreground"][0].any(), "a primary object is visible in the first frame"


def test_ground_truth_flow_reconstructs_frames(videos):
    """Warping frame t+1 with the forward flow of t (and t-1 with the backward flow) gives frame t."""
    n_moved = 0
    for v in videos:
        frames = v["frames"].astype(np.float32)
        errors, unwarped = [], []
        for t in range(len(frames) - 1):
            for flow, src, dst, valid, ids in (
                (v["flow_forward"][t], frames[t + 1], frames[t], v["valid_forward"][t], v["instances"][t]),
                (v["flow_backward"][t + 1], frames[t], frames[t + 1], v["valid_backward"][t + 1], v["instances"][t + 1]),
            ):
                assert valid.mean() > 0.8
                valid = valid & away_from_edges(ids)
                errors.append(np.abs(warp_back(src, flow) - dst).mean(-1)[valid].mean())
                unwarped.append(np.abs(src - dst).mean(-1)[valid].mean())
                shifted = np.abs(warp_back(src, flow + 1.5) - dst).mean(-1)[valid].mean()
                # noise at difficulty 1 has sigma 4: |N(0, 4 sqrt 2)| ~ 4.5 grey levels
                assert errors[-1] < 8.0 and errors[-1] < 0.7 * shifted, (t, errors[-1], shifted)
        errors, unwarped = np.array(errors), np.array(unwarped)
        assert errors.mean() < 6.0  # about the noise floor
        moved = unwarped > 10  # frames with clear motion: the flow explains most of the change
        assert (errors[moved] < 0.6 * unwarped[moved]).all(), (errors, unwarped)
        n_moved += moved.sum()
    assert n_moved >= 10


def test_forward_and_backward_flow_are_inverse_on_visible_surface(videos):
    for v in videos:
        h, w = SIZE
        for t in range(len(v["frames"]) - 1):
            fw, valid = v["flow_forward"][t], v["valid_forward"][t]
            bw_at_target = warp_back(np.dstack([v["flow_backward"][t + 1], np.zeros((h, w))]).astype(np.float32), fw)
            cycle = np.linalg.norm(fw + bw_at_target[..., :2], axis=-1)
            interior = valid & (cv2.erode(valid.astype(np.uint8), np.ones((3, 3))) > 0)
            assert np.median(cycle[interior]) < 0.05


def fit_affine(points: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Least-squares affine map points (N, 2) -> values (N, 2). -> (3, 2)."""
    design = np.concatenate([points, np.ones((len(points), 1))], 1)
    return np.linalg.lstsq(design, values, rcond=None)[0]


def test_distractors_move_only_with_the_camera():
    checked = 0
    for seed in range(12):
        v = synthetic.render_video(seed, n_frames=6, size=SIZE, difficulty=1.0)
        static = [o["id"] for o in v["objects"] if o["kind"] == "static"]
        moving = [o["id"] for o in v["objects"] if o["kind"] == "moving"]
        h, w = SIZE
        ys, xs = np.mgrid[0:h, 0:w]
        grid = np.stack([xs, ys], -1).reshape(-1, 2).astype(np.float64)
        object_motion = []
        for t in range(6):
            flow = v["flow_forward"][t].reshape(-1, 2).astype(np.float64)
            ids = v["instances"][t].reshape(-1)
            camera = fit_affine(grid[ids == 0], flow[ids == 0])  # the background is one affine motion
            predicted = np.concatenate([grid, np.ones((len(grid), 1))], 1) @ camera
            assert np.abs(predicted[ids == 0] - flow[ids == 0]).max() < 1e-3
            for i in static:
                if (ids == i).any():
                    assert np.abs(predicted[ids == i] - flow[ids == i]).max() < 1e-3
                    checked += 1
            object_motion += [np.abs(predicted[ids == i] - flow[ids == i]).max() for i in moving if (ids == i).any()]
        assert max(object_motion) > 0.1  # the primary objects do move relative to the background
    assert checked > 5, "the seeds tried should contain static distractors"


def test_late_entries_and_exits_at_difficulty_one():
    objects = [o for seed in range(10) for o in synthetic.render_video(seed, 8, SIZE, 1.0)["objects"]]
    late = [o for o in objects if o["enters_late"]]
    assert late and all(o["first_frame"] > 0 and o["kind"] == "moving" for o in late)
    assert any(o["leaves_view"] and o["last_frame"] < 7 for o in objects)
    easy = [o for seed in range(10) for o in synthetic.render_video(seed, 8, SIZE, 0.0)["objects"]]
    assert not any(o["enters_late"] or o["kind"] == "static" for o in easy)


def test_difficulty_raises_motion_and_camouflage():
    def stats(d):
        speed, contrast = [], []
        for seed in range(6):
            v = synthetic.render_video(seed, 6, SIZE, d)
            fg = v["instances"] > 0
            speed.append(np.linalg.norm(v["flow_forward"], axis=-1).mean())
            frames = v["frames"].astype(np.float32)
            contrast.append(np.linalg.norm(frames[fg].mean(0) - frames[~fg].mean(0)))
        return np.mean(speed), np.mean(contrast)

    easy, hard = stats(0.0), stats(1.5)
    assert hard[0] > 1.5 * easy[0]
    assert hard[1] < easy[1]


def test_occlusions_happen():
    occluded = 0
    for seed in range(8):
        v = synthetic.render_video(seed, 8, SIZE, 1.0)
        occluded += int((~v["valid_forward"][:-1] & (v["instances"][:-1] > 0)).sum())
    assert occluded > 100


def test_generate_writes_davis_layout_readable_with_io(tmp_path):
    root = synthetic.generate(tmp_path, split="val", n_videos=2, n_frames=3, size=SIZE, seed=5)
    names = (root / "ImageSets" / "val.txt").read_text().split()
    assert names == ["synth-val-0000", "synth-val-0001"]
    name = names[1]
    v = synthetic.render_video(synthetic.video_seed(5, "val", 1), 3, SIZE, 1.0)
    for t in range(3):
        stem = f"{t:05d}"
        frame = io.read_image(root / "JPEGImages" / name / f"{stem}.jpg")
        assert frame.shape == (*SIZE, 3) and np.abs(frame.astype(int) - v["frames"][t]).mean() < 5
        np.testing.assert_array_equal(io.read_mask(root / "Annotations" / name / f"{stem}.png"), v["instances"][t])
        np.testing.assert_array_equal(io.read_mask(root / "Annotations_binary" / name / f"{stem}.png"),
                                      v["foreground"][t] * 255)
        np.testing.assert_array_equal(io.read_flo(root / "Flow" / "forward" / name / f"{stem}.flo"),
                                      v["flow_forward"][t])
        np.testing.assert_array_equal(io.read_flo(root / "Flow" / "backward" / name / f"{stem}.flo"),
                                      v["flow_backward"][t])
    meta = json.loads((root / "meta" / f"{name}.json").read_text())
    assert meta["n_frames"] == 3 and meta["size"] == list(SIZE)
    assert [o["id"] for o in meta["objects"]] == [o["id"] for o in v["objects"]]
    assert {"id", "kind", "shape", "first_frame", "last_frame"} <= set(meta["objects"][0])
    assert synthetic.read_meta(root, name) == meta


def test_ensure_generates_once_into_hashed_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VOSLAB_CACHE", str(tmp_path / "cache"))
    config = {"n_videos": 2, "n_frames": 2, "size": [32, 48], "seed": 1}
    root = synthetic.ensure("train", config)
    assert root.parent == tmp_path / "cache" / "data" / "synthetic"
    assert root.name == synthetic.config_hash(config) == synthetic.config_hash({**config, "size": (32, 48)})
    stamp = (root / "JPEGImages" / "synth-train-0000" / "00000.jpg").stat().st_mtime_ns
    assert synthetic.ensure("train", config) == root
    assert (root / "JPEGImages" / "synth-train-0000" / "00000.jpg").stat().st_mtime_ns == stamp
    assert synthetic.ensure("val", config) == root
    assert (root / "ImageSets" / "val.txt").read_text().split() == ["synth-val-0000", "synth-val-0001"]
    assert not [p for p in root.iterdir() if p.name.startswith(".tmp")]
    assert synthetic.config_hash({**config, "seed": 2}) != root.name


def test_ensure_recovers_from_interrupted_run(tmp_path):
    config = {"n_videos": 1, "n_frames": 2, "size": [32, 48]}
    (tmp_path / "JPEGImages" / "synth-train-0000").mkdir(parents=True)
    (tmp_path / "JPEGImages" / "synth-train-0000" / "junk.jpg").write_bytes(b"half written")
    root = synthetic.ensure("train", config, root=tmp_path)
    assert sorted(p.name for p in (root / "JPEGImages" / "synth-train-0000").iterdir()) == ["00000.jpg", "00001.jpg"]


def test_bad_arguments_raise_actionable_errors():
    with pytest.raises(VOSDataError, match="n_video"):
        synthetic.ensure("train", {"n_video": 3})
    with pytest.raises(VOSDataError, match="size"):
        synthetic.render_video(0, 2, size=(8, 8))
    with pytest.raises(VOSDataError, match="difficulty"):
        synthetic.render_video(0, 2, difficulty=-1)


def test_a_moving_object_shows_in_frame_zero():
    # frame 0 is AD-Net's anchor and the semi-supervised first mask: never an empty scene
    # (seeds 0 and 50 of the smoke split used to render only a static distractor)
    for index in range(60):
        video = synthetic.render_video(synthetic.video_seed(0, "train", index), n_frames=6, size=(64, 112),
                                       difficulty=0.5)
        assert video["foreground"][0].mean() >= 0.002, index
