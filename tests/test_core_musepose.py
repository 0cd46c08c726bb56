"""MusePose core (musev_core.musepose): key layouts, refusals, pose guider, schedule. No ComfyUI needed.

Full-size layouts come from ../shared/fixtures/checkpoint_keys/musepose_keys.json, tiny weights and tensors from
the parity set (MUSEPOSE_PARITY_DIR, default ../shared/fixtures/musepose_parity), settings from its report.json.
"""
import json
import os

import pytest
import safetensors.torch
import torch

from musev_core.checkpoint import CheckpointError
from musev_core.musepose import checkpoint as mp_checkpoint
from musev_core.musepose import modules as mp_modules
from musev_core.musepose import schedule as mp_schedule

SD15_CHANNELS = (320, 640, 1280, 1280)


def parity_dir(shared):
    return os.environ.get("MUSEPOSE_PARITY_DIR", os.path.join(shared, "fixtures", "musepose_parity"))


@pytest.fixture(scope="module")
def keys_json(shared_dir):
    return json.load(open(os.path.join(shared_dir, "fixtures", "checkpoint_keys", "musepose_keys.json")))


@pytest.fixture(scope="module")
def fixture(shared_dir):
    root = parity_dir(shared_dir)
    return {"root": root, "report": json.load(open(os.path.join(root, "report.json"))),
            "configs": json.load(open(os.path.join(root, "tiny_configs.json")))}


def rel_err(actual, expected):
    actual, expected = actual.double(), expected.double()
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    return float((actual - expected).abs().max() / expected.abs().max())


def shapes_of(module):
    return {k: list(v.shape) for k, v in module.state_dict().items()}


def test_full_size_motion_module_layout_is_every_key_of_the_release(keys_json):
    modules = mp_modules.MotionModules(mp_modules.motion_module_positions(SD15_CHANNELS), device="meta")
    expected = keys_json["motion_module"]
    pe = {k: v for k, v in expected.items() if k.endswith(".pos_encoder.pe")}
    assert len(pe) == keys_json["counts"]["motion_module_pe_buffers"] == 42
    assert len(modules.positions) == keys_json["counts"]["motion_modules"] == 21
    ours = shapes_of(modules)
    assert ours == {k: v for k, v in expected.items() if k not in pe}
    for key, shape in pe.items():  # ignored on purpose, but the shape is what our sinusoid has
        prefix = key.split(".temporal_transformer.")[0]
        assert shape == [1, 128, modules.positions[prefix]]


def test_full_size_pose_guider_layout(keys_json):
    guider = mp_modules.PoseGuider(320, (16, 32, 96, 256), device="meta")
    assert shapes_of(guider) == keys_json["pose_guider"]
    assert len(keys_json["pose_guider"]) == keys_json["counts"]["pose_guider"] == 16


def test_full_size_layouts_are_recognised(keys_json, tmp_path):
    for kind in mp_checkpoint.KINDS:
        path = tmp_path / f"{kind}.safetensors"
        safetensors.torch.save_file({k: torch.zeros(v) if kind == "motion_module" and k.endswith(".pe")
                                     else torch.zeros(1) for k, v in keys_json[kind].items()}, str(path))
        file = mp_checkpoint.CheckpointFile(str(path))
        mp_checkpoint.check_kind(file, kind)
        assert len(file.shapes) == keys_json["counts"][kind]


def test_tiny_motion_modules_load_every_key(fixture):
    file = mp_checkpoint.CheckpointFile(os.path.join(fixture["root"], "tiny_motion_module.safetensors"))
    modules, info = mp_checkpoint.load_motion_modules(file, dtype=torch.float32)
    counts = fixture["report"]["key_counts"]
    assert info["keys_loaded"] + info["pe_keys_ignored"] == counts["motion_module"] == len(file.shapes)
    assert info["pe_keys_ignored"] == counts["motion_module_pe_buffers"]
    config = fixture["configs"]["denoising_unet"]["base_unet_config_json"]
    assert info["positions"] == mp_modules.motion_module_positions(config["block_out_channels"],
                                                                   config["layers_per_block"])
    stored = safetensors.torch.load_file(file.path)
    for prefix, module in modules.named_motion_modules():
        state = module.state_dict()
        for key, tensor in state.items():
            assert torch.equal(tensor, stored[f"{prefix}.{key}"].float()), key
        # the stored sinusoid equals the constructed one (MusePose discards the stored copy)
        pe = module.temporal_transformer.transformer_blocks[0].attention_blocks[0].pos_encoder.pe
        assert torch.equal(pe, stored[f"{prefix}.temporal_transformer.transformer_blocks.0.attention_blocks.0."
                                      f"pos_encoder.pe"])


def test_pose_guider_matches_reference(fixture):
    file = mp_checkpoint.CheckpointFile(os.path.join(fixture["root"], "tiny_pose_guider.safetensors"))
    guider = mp_checkpoint.load_pose_guider(file, dtype=torch.float32)
    assert len(file.shapes) == fixture["report"]["key_counts"]["pose_guider"]
    data = safetensors.torch.load_file(os.path.join(fixture["root"], "pipeline.safetensors"))
    with torch.no_grad():
        out = guider(data["pose_images"][0].permute(1, 0, 2, 3) / 255)
    assert rel_err(out, data["pose_fea"][0].permute(1, 0, 2, 3)) < 1e-4


def test_motion_module_positions_are_window_relative():
    torch.manual_seed(0)
    module = mp_modules.MotionModule(32).eval()
    x = torch.randn(6, 32, 2, 2)  # one 6-frame window
    with torch.no_grad():
        whole = module(x, 6)
        tail = module(x[3:], 3)  # frames 3..5 as a window of their own: positions restart at 0
        first = module(x[:3], 3)
    assert whole.shape == x.shape
    assert rel_err(tail, whole[3:]) > 1e-3  # other positions and other neighbours
    assert not torch.equal(first, whole[:3])
    with pytest.raises(ValueError, match="at most 128 frames per window, got 129"):
        module(torch.randn(129, 32, 1, 1), 129)


def test_motion_module_groupnorm_is_per_frame():
    torch.manual_seed(0)
    module = mp_modules.MotionModule(32).eval()
    x = torch.randn(4, 32, 2, 2)
    scaled = x.clone()
    scaled[2] = scaled[2] * 3 + 1  # a per-frame affine change is undone by a per-frame GroupNorm ...
    with torch.no_grad():
        a, b = module(x, 4), module(scaled, 4)
    # ... so only frame 2's residual differs (the normalised features of every frame are the same)
    assert torch.allclose(a[[0, 1, 3]], b[[0, 1, 3]], atol=1e-5)


def test_attention_callable_is_used():
    calls = []

    def attention(q, k, v, heads):
        calls.append((tuple(q.shape), heads))
        return mp_modules.sdpa_attention(q, k, v, heads)

    module = mp_modules.MotionModule(32, attention=attention)
    module(torch.randn(4, 32, 2, 2), 2)
    assert calls == [((8, 2, 32), 8), ((8, 2, 32), 8)]


def test_schedule_matches_reference(fixture):
    report = fixture["report"]
    settings = report["settings"]
    data = safetensors.torch.load_file(os.path.join(fixture["root"], "pipeline.safetensors"))
    assert torch.equal(mp_schedule.alphas_cumprod(), data["scheduler.alphas_cumprod"])
    assert float(mp_schedule.alphas_cumprod()[-1]) == 0.0
    assert mp_schedule.trailing_timesteps(settings["steps"]) == report["pipeline"]["timesteps"]
    prev = [mp_schedule.ddim_previous_timestep(t, settings["steps"]) for t in report["pipeline"]["timesteps"]]
    assert prev == report["spec_check"]["ddim_prev_timestep_used"]
    windows = mp_schedule.musepose_windows(settings["video_length"], settings["context_frames"],
                                           settings["context_overlap"], settings["context_stride"])
    for step_windows in report["pipeline"]["windows_per_step"]:
        assert windows == step_windows
    for call in report["pipeline"]["context_scheduler_calls"]:
        args = call["args"]
        if args["context_overlap"] < args["context_size"]:
            assert mp_schedule.musepose_windows(args["num_frames"], args["context_size"], args["context_overlap"],
                                                args["context_stride"]) == call["windows"]


def test_trailing_timesteps_and_windows_examples():
    assert mp_schedule.trailing_timesteps(4) == [999, 749, 499, 249]
    assert mp_schedule.trailing_timesteps(20)[:3] == [999, 949, 899]
    assert mp_schedule.musepose_windows(5, 8, 2) == [[0, 1, 2, 3, 4]]
    assert mp_schedule.musepose_windows(14, 8, 2) == [list(range(8)), list(range(6, 14))]
    with pytest.raises(ValueError, match=r"context_overlap \(8\) must be smaller than context_frames \(8\)"):
        mp_schedule.musepose_windows(20, 8, 8)


@pytest.mark.parametrize("frames,s,o,expected", [(16, 8, 2, 4), (14, 8, 2, 0), (300, 48, 4, 12), (48, 48, 4, 0),
                                                 (49, 48, 4, 43), (5, 8, 2, 3)])
def test_pose_padding_tiles_the_windows(frames, s, o, expected):
    rep = mp_schedule.pose_padding(frames, s, o)
    assert rep == expected
    padded = frames + rep
    assert (padded - s) % (s - o) == 0
    windows = mp_schedule.musepose_windows(padded, s, o)
    assert all(w == sorted(w) for w in windows)  # no wrap-around
    assert sorted({f for w in windows for f in w}) == list(range(padded))


# --- refusals ---------------------------------------------------------------------------------------------

def _save(path, tensors):
    if str(path).endswith(".safetensors"):
        safetensors.torch.save_file(tensors, str(path))
    else:
        torch.save(tensors, str(path))
    return mp_checkpoint.CheckpointFile(str(path))


def test_musev_unet_is_refused(tmp_path):
    file = _save(tmp_path / "musev_unet.safetensors", {"conv_in.weight": torch.zeros(1),
                                                      "down_blocks.0.temp_convs.0.conv1.0.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError) as info:
        mp_checkpoint.check_kind(file, "denoising_unet")
    assert str(info.value) == (
        "musev_unet.safetensors is not " + mp_checkpoint.EXPECTED["denoising_unet"] + ": it looks like a MuseV UNet "
        "(temporal layers 'temp_convs' / 'temp_attentions'); load it with 'Load MuseV UNet'")


def test_animatediff_module_is_refused(tmp_path):
    prefix = "down_blocks.0.motion_modules.0.temporal_transformer."
    tensors = {prefix + "norm.weight": torch.zeros(320),
               prefix + "transformer_blocks.0.attention_blocks.0.pos_encoder.pe": torch.zeros(1, 24, 320)}
    file = _save(tmp_path / "mm_sd_v15.ckpt", tensors)
    with pytest.raises(CheckpointError) as info:
        mp_checkpoint.load_motion_modules(file)
    assert str(info.value) == (
        "mm_sd_v15.ckpt is not " + mp_checkpoint.EXPECTED["motion_module"] + ": it looks like an AnimateDiff motion "
        "module such as mm_sd_v15 (24-frame positional encoding, no mid-block module)")


def test_sd_checkpoint_is_refused(tmp_path):
    file = _save(tmp_path / "v1-5.safetensors", {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1),
                                                 "first_stage_model.encoder.conv_in.weight": torch.zeros(1)})
    for kind in mp_checkpoint.KINDS:
        with pytest.raises(CheckpointError) as info:
            mp_checkpoint.check_kind(file, kind)
        assert str(info.value) == (f"v1-5.safetensors is not {mp_checkpoint.EXPECTED[kind]}: it looks like a "
                                   f"single-file Stable Diffusion checkpoint (keys 'model.diffusion_model...')")


def test_swapped_musepose_files_are_refused(fixture):
    reference = mp_checkpoint.CheckpointFile(os.path.join(fixture["root"], "tiny_reference_unet.safetensors"))
    with pytest.raises(CheckpointError) as info:
        mp_checkpoint.check_kind(reference, "denoising_unet")
    assert str(info.value).endswith("it looks like an SD1.5 UNet without its output head (like MusePose's "
                                    "reference_unet.pth)")
    guider = mp_checkpoint.CheckpointFile(os.path.join(fixture["root"], "tiny_pose_guider.safetensors"))
    with pytest.raises(CheckpointError, match=r"tiny_pose_guider.safetensors is not MusePose's motion_module.pth"):
        mp_checkpoint.load_motion_modules(guider)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_file_is_refused(tmp_path, suffix):
    path = tmp_path / f"pose_guider{suffix}"
    _save(path, {"conv_in.weight": torch.randn(16, 3, 3, 3), "conv_out.weight": torch.randn(320, 16, 3, 3)})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as info:
        mp_checkpoint.CheckpointFile(str(path))
    kind = "safetensors" if suffix == ".safetensors" else "PyTorch state-dict"
    assert str(info.value).startswith(f"could not read pose_guider{suffix}: the file is truncated or not a {kind} "
                                      f"file (")


def test_pth_is_read_with_weights_only(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"conv_in.weight": torch.zeros(1), "callable": print}, str(path))
    with pytest.raises(CheckpointError, match=r"could not read evil.pth: the file contains code \(it imports "
                                              r"'(builtins\.)?print'\) besides tensors and was refused for safety"):
        mp_checkpoint.CheckpointFile(str(path))


def test_musepose_core_runs_without_comfy_in_a_clean_interpreter():
    from clean_imports import run_clean
    code = (
        "import sys, torch\n"
        "from musev_core.musepose import MotionModule, PoseGuider, musepose_windows, alphas_cumprod\n"
        "y = MotionModule(32)(torch.randn(2 * 3, 32, 2, 2), 3)\n"
        "f = PoseGuider(32, (8, 8, 16, 16))(torch.rand(3, 3, 64, 64))\n"
        "assert y.shape == (6, 32, 2, 2) and f.shape == (3, 32, 8, 8)\n"
        "assert musepose_windows(16, 8, 2)[-1] == [12, 13, 14, 15, 0, 1, 2, 3] and float(alphas_cumprod()[-1]) == 0\n"
        "assert not any(m == 'comfy' or m.startswith('comfy.') or m == 'folder_paths' for m in sys.modules)\n"
        "print('ok')\n"
    )
    result = run_clean(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_a_tensor_with_nan_is_refused_naming_the_file_and_tensor(tmp_path):
    path = tmp_path / "pose_guider.pth"
    torch.save({"conv_in.weight": torch.zeros(2, 3), "conv_in.bias": torch.tensor([0.0, float("nan")])}, str(path))
    file = mp_checkpoint.CheckpointFile(str(path))
    assert file.shapes == {"conv_in.weight": (2, 3), "conv_in.bias": (2,)}
    assert file.tensors(["conv_in.weight"])["conv_in.weight"].eq(0).all()
    with pytest.raises(CheckpointError, match=r"^pose_guider\.pth is damaged: tensor 'conv_in\.bias' holds NaN or "
                                              r"infinite values; re-download the file$"):
        file.tensors(["conv_in.weight", "conv_in.bias"])
