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


# ------------------------------------------------------------------------------------------------
# Scenarios
# ------------------------------------------------------------------------------------------------
SCENARIO_SIZE = (64, 112)


def scenario_videos(scenario: str, n: int = 6, n_frames: int = 10, size=SCENARIO_SIZE, difficulty: float = 1.0):
    return [synthetic.render_video(synthetic.video_seed(3, scenario, i), n_frames, size, difficulty, scenario)
            for i in range(n)]


def own_motion(video: dict, t: int, ids) -> dict[int, float]:
    """Largest motion of each visible object relative to the camera (the background's affine flow), frame t -> t+1."""
    h, w = video["instances"].shape[1:]
    ys, xs = np.mgrid[0:h, 0:w]
    grid = np.stack([xs, ys], -1).reshape(-1, 2).astype(np.float64)
    flow = video["flow_forward"][t].reshape(-1, 2).astype(np.float64)
    labels = video["instances"][t].reshape(-1)
    camera = fit_affine(grid[labels == 0], flow[labels == 0])
    predicted = np.concatenate([grid, np.ones((len(grid), 1))], 1) @ camera
    return {i: float(np.abs(predicted[labels == i] - flow[labels == i]).max()) for i in ids if (labels == i).any()}


def primary_ids(video: dict) -> list[int]:
    return [o["id"] for o in video["objects"] if o["kind"] == "moving"]


def test_scenario_names_and_validation():
    assert synthetic.SCENARIOS[0] == synthetic.DEFAULT_SCENARIO == "classic" and synthetic.SCENARIOS[-1] == "mixed"
    assert set(synthetic.MIXED_SCENARIOS) == set(synthetic.SCENARIOS) - {"classic", "mixed"}
    assert len(synthetic.MIXED_SCENARIOS) == 8
    with pytest.raises(VOSDataError, match="transient_lookalikes"):
        synthetic.render_video(0, 2, SIZE, scenario="lookalikes")
    with pytest.raises(VOSDataError, match="scenario"):
        synthetic.ensure("train", {"scenario": "nope"})


@pytest.mark.parametrize("scenario", synthetic.MIXED_SCENARIOS)
def test_every_scenario_keeps_the_ground_truth_exact(scenario):
    """Masks, foreground and flow follow the same rules in every scenario; the per-frame record is complete."""
    for v in scenario_videos(scenario, n=2, n_frames=8):
        assert v["scenario"] == scenario and len(v["frame_info"]) == 8
        assert {"lookalikes", "hidden", "stopped", "corruption"} == set(v["frame_info"][0])
        primary = primary_ids(v)
        assert primary and v["foreground"][0].mean() >= 0.002
        np.testing.assert_array_equal(v["foreground"], np.isin(v["instances"], primary))
        ids = sorted(o["id"] for o in v["objects"])
        assert ids == list(range(1, len(ids) + 1)) and set(np.unique(v["instances"])) <= {0, *ids}
        flags = synthetic.frame_flags(v)
        clean = ~(flags["corrupted"][:-1] | flags["corrupted"][1:])
        frames = v["frames"].astype(np.float32)
        for t in range(7):
            fw, valid = v["flow_forward"][t], v["valid_forward"][t]
            backward = np.dstack([v["flow_backward"][t + 1], np.zeros(SCENARIO_SIZE)]).astype(np.float32)
            back = warp_back(backward, fw)
            interior = valid & (cv2.erode(valid.astype(np.uint8), np.ones((3, 3))) > 0)
            assert np.median(np.linalg.norm(fw + back[..., :2], axis=-1)[interior]) < 0.05
            if clean[t]:  # the flow explains the next frame (objects only where the background drifts)
                keep = valid & away_from_edges(v["instances"][t])
                if scenario == "transient_lookalikes":
                    keep &= v["instances"][t] > 0
                if keep.sum() > 50:
                    error = np.abs(warp_back(frames[t + 1], fw) - frames[t]).mean(-1)[keep].mean()
                    assert error < 8.0, (scenario, t, error)


def test_classic_is_the_default_and_unchanged_by_the_scenarios():
    a = synthetic.render_video(11, 6, SIZE)
    b = synthetic.render_video(11, 6, SIZE, scenario="classic")
    assert a["scenario"] == "classic" and a["frames"].tobytes() == b["frames"].tobytes()
    assert all(o["kind"] in ("moving", "static") for o in a["objects"])


def test_transient_lookalikes():
    videos = scenario_videos("transient_lookalikes", n=8, n_frames=10)
    travels = []
    for v in videos:
        primary = primary_ids(v)
        lookalikes = [o for o in v["objects"] if o["kind"] == "lookalike"]
        assert len(primary) == 1 and lookalikes
        assert all((v["instances"][t] == primary[0]).any() for t in range(10)), "the primary persists"
        look_ids = [o["id"] for o in lookalikes]
        assert not np.isin(v["instances"][0], look_ids).any(), "no lookalike in the anchor frame"
        shown = np.isin(v["instances"], look_ids)
        assert shown.any() and not (shown & (v["foreground"] > 0)).any(), "lookalikes are not foreground"
        for o in lookalikes:  # a few frames only, similar size, moving
            assert 1 <= o["first_frame"] and o["last_frame"] - o["first_frame"] + 1 <= 3
        size = v["objects"][primary[0] - 1]["radius"]
        assert all(0.5 < o["radius"] / size < 2 for o in lookalikes), "lookalikes have the primary's size"
        moved = [m for t in range(9) for i, m in own_motion(v, t, look_ids).items()
                 if (v["instances"][t + 1] == i).any()]
        assert max(moved) > 1.0, "lookalikes move too"
        flags = synthetic.frame_flags(v)
        np.testing.assert_array_equal(flags["lookalikes"], shown.any(axis=(1, 2)))
        travels.append(next(o["travel"] for o in v["objects"] if o["kind"] == "moving"))
    assert np.mean(np.array(travels) > 1.0) >= 0.5, f"the primary should often travel beyond its size: {travels}"


def test_transient_lookalikes_background_changes_more_than_classic():
    def drift(scenario):
        out = []
        for v in scenario_videos(scenario, n=6, n_frames=10):
            bg0, bg1 = v["instances"][0] == 0, v["instances"][-1] == 0
            f = v["frames"].astype(np.float32)
            out.append(np.linalg.norm(f[0][bg0].mean(0) - f[-1][bg1].mean(0)))
        return np.mean(out)

    assert drift("transient_lookalikes") > 2 * drift("classic") + 5


def test_camouflage_objects_have_the_background_colours_and_move():
    def colour_gap(scenario):
        gaps = []
        for v in scenario_videos(scenario, n=6, n_frames=4):
            f, fg = v["frames"][0].astype(np.float32), v["foreground"][0] > 0
            bg = v["instances"][0] == 0
            gaps.append(np.linalg.norm(f[fg].mean(0) - f[bg].mean(0)) + np.linalg.norm(f[fg].std(0) - f[bg].std(0)))
        return np.mean(gaps)

    camouflaged, classic = colour_gap("camouflage"), colour_gap("classic")
    assert camouflaged < 0.5 * classic and camouflaged < 25, (camouflaged, classic)
    for v in scenario_videos("camouflage", n=3, n_frames=6):
        for t in range(5):
            assert min(own_motion(v, t, primary_ids(v)).values()) > 0.3, "camouflaged objects never stop"


def test_stop_and_go_objects_stop_for_stretches_then_move():
    for v in scenario_videos("stop_and_go", n=6, n_frames=12):
        primary = primary_ids(v)
        assert any(o["kind"] == "static" for o in v["objects"]), "still distractors stand next to them"
        still = np.array([[own_motion(v, t, [i]).get(i, 1.0) < 1e-3 for t in range(11)] for i in primary])
        runs = [max((len(r) for r in "".join("x" if s else " " for s in row).split()), default=0) for row in still]
        assert max(runs) >= 2 and not still.all(), still
        flagged = np.array([[i in v["frame_info"][t]["stopped"] for t in range(11)] for i in primary])
        np.testing.assert_array_equal(flagged, still)


def test_static_start_objects_are_still_first_then_move():
    for v in scenario_videos("static_start", n=6, n_frames=12):
        for i in primary_ids(v):
            motion = [own_motion(v, t, [i]).get(i, np.nan) for t in range(11)]
            assert motion[0] < 1e-3 and motion[1] < 1e-3, motion  # still for the first frames
            assert np.nanmax(motion[4:]) > 0.5, motion  # moving later
        assert synthetic.frame_flags(v)["stopped"][0] and not synthetic.frame_flags(v)["stopped"][-1]


def test_identical_instances_share_one_appearance():
    counts = []
    for v in scenario_videos("identical_instances", n=8, n_frames=8):
        objects = v["objects"]
        assert all(o["kind"] == "moving" for o in objects) and len({o["appearance"] for o in objects}) == 1
        assert len({o["shape"] for o in objects}) == 1
        counts.append(len(objects))
        first = v["instances"][0]
        assert len(np.intersect1d(np.unique(first), [o["id"] for o in objects])) >= 2, "identities come from frame 0"
        areas = {o["id"]: (first == o["id"]).sum() for o in objects}
        whole = [i for i, a in areas.items() if a >= 0.95 * max(areas.values())]  # not occluded or cut
        frame = v["frames"][0].astype(np.float32)
        means = np.array([frame[cv2.erode((first == i).astype(np.uint8), np.ones((3, 3))) > 0].mean(0) for i in whole])
        assert np.abs(means - means[0]).max() < 12, means  # same texture: same colours, up to noise
    assert 2 <= min(counts) and max(counts) <= 6 and max(counts) >= 4, counts


def test_occlude_reappear_hides_an_object_then_shows_it_far_away():
    for v in scenario_videos("occlude_reappear", n=6, n_frames=10):
        found = False
        for i in primary_ids(v):
            seen = np.array([(v["instances"][t] == i).any() for t in range(10)])
            gone = np.flatnonzero(~seen)
            if not len(gone) or not seen[: gone[0]].any() or not seen[gone[-1]:].any():
                continue
            start, stop = gone[0], gone[0]
            while stop + 1 < 10 and not seen[stop + 1]:
                stop += 1
            if stop - start + 1 < 2 or stop + 1 >= 10:
                continue
            found = True
            assert all(i in v["frame_info"][t]["hidden"] for t in range(start, stop + 1))
            before = np.argwhere(v["instances"][start - 1] == i).mean(0)
            after = np.argwhere(v["instances"][stop + 1] == i).mean(0)
            diameter = 2 * np.sqrt(max((v["instances"][t] == i).sum() for t in range(10)) / np.pi)
            assert np.linalg.norm(after - before) > diameter, (before, after, diameter)
        assert found, "an object is hidden for >= 2 frames and reappears"
        assert any(o["kind"] == "static" for o in v["objects"]), "the occluder is a distractor"


def test_corrupted_frames_touch_only_the_rgb_of_flagged_frames():
    for index in range(3):
        seed = synthetic.video_seed(3, "corrupted", index)
        v = synthetic.render_video(seed, 10, SCENARIO_SIZE, 1.0, "corrupted_frames")
        clean = synthetic.render_video(seed, 10, SCENARIO_SIZE, 1.0, "corrupted_frames", corrupt=False)
        flags = synthetic.frame_flags(v)
        assert not flags["corrupted"][0] and 1 <= flags["corrupted"].sum() <= 9
        assert not synthetic.frame_flags(clean)["corrupted"].any()
        assert {f["corruption"] for f in v["frame_info"]} <= {None, "blur", "noise", "half_occluded"}
        for t in range(10):
            diff = np.abs(v["frames"][t].astype(int) - clean["frames"][t]).mean()
            assert (diff > 2.0) if flags["corrupted"][t] else (diff == 0), (t, diff)
        for key in ("instances", "foreground", "flow_forward", "flow_backward", "valid_forward"):
            np.testing.assert_array_equal(v[key], clean[key])
    kinds = {f["corruption"] for i in range(8) for f in synthetic.render_video(
        synthetic.video_seed(4, "corrupted", i), 10, (32, 48), 1.0, "corrupted_frames")["frame_info"]}
    assert kinds == {None, "blur", "noise", "half_occluded"}


def test_many_objects_up_to_ten():
    counts = [len(v["objects"]) for v in scenario_videos("many_objects", n=8, n_frames=4)]
    assert min(counts) >= 4 and max(counts) <= 10 and max(counts) >= 7, counts
    assert all(o["kind"] == "moving" for v in scenario_videos("many_objects", n=2, n_frames=3) for o in v["objects"])


def test_difficulty_scales_within_a_scenario():
    easy = [len(v["objects"]) for v in scenario_videos("many_objects", n=6, n_frames=3, difficulty=0.0)]
    hard = [len(v["objects"]) for v in scenario_videos("many_objects", n=6, n_frames=3, difficulty=1.0)]
    assert max(easy) == 4 and np.mean(hard) > np.mean(easy)


def test_mixed_split_balances_scenarios_and_records_them(tmp_path):
    root = synthetic.generate(tmp_path, "val", n_videos=8, n_frames=3, size=(32, 48), seed=2, scenario="mixed")
    names = (root / "ImageSets" / "val.txt").read_text().split()
    scenarios = [synthetic.scenario_of(root, name) for name in names]
    assert sorted(scenarios) == sorted(synthetic.MIXED_SCENARIOS)
    assert scenarios == synthetic.mixed_scenarios(8, seed=2, split="val")
    meta = synthetic.read_meta(root, names[0])
    assert meta["scenario_config"] == "mixed" and meta["generator_version"] == synthetic.GENERATOR_VERSION
    assert len(meta["frames"]) == 3 and set(synthetic.frame_flags(meta)) == set(synthetic.FRAME_FLAGS)
    video = synthetic.render_video(synthetic.video_seed(2, "val", 0), 3, (32, 48), 1.0, scenarios[0])
    np.testing.assert_array_equal(io.read_mask(root / "Annotations" / names[0] / "00000.png"), video["instances"][0])
    assert meta["frames"] == json.loads(json.dumps(video["frame_info"]))
    assert synthetic.render_video(5, 3, (32, 48), scenario="mixed")["scenario"] in synthetic.MIXED_SCENARIOS
    with pytest.raises(VOSDataError, match="synth-val-0099"):
        synthetic.read_meta(root, "synth-val-0099")


def test_ensure_keys_the_cache_by_scenario(tmp_path, monkeypatch):
    monkeypatch.setenv("VOSLAB_CACHE", str(tmp_path / "cache"))
    config = {"n_videos": 1, "n_frames": 2, "size": [32, 48], "scenario": "camouflage"}
    assert synthetic.config_hash(config) != synthetic.config_hash({**config, "scenario": "classic"})
    assert synthetic.config_hash({k: v for k, v in config.items() if k != "scenario"}) == \
        synthetic.config_hash({**config, "scenario": "classic"})
    root = synthetic.ensure("train", config)
    assert synthetic.scenario_of(root, "synth-train-0000") == "camouflage"
    assert synthetic.ensure("train", config) == root


def test_generate_reports_a_writer_error_and_leaves_no_split_marker(tmp_path, monkeypatch):
    real = synthetic.write_video

    def failing(root, name, video, info=None):
        if name.endswith("0002"):
            raise OSError("disk full")
        real(root, name, video, info)

    monkeypatch.setattr(synthetic, "write_video", failing)
    with pytest.raises(OSError, match="disk full"):
        synthetic.generate(tmp_path, "train", n_videos=5, n_frames=2, size=(32, 48))
    assert not (tmp_path / "ImageSets" / "train.txt").exists()
