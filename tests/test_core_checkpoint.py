"""Checkpoint handling in musev_core against the released key layout (no ComfyUI, no weights)."""
import json
import os
import re

import pytest
import safetensors.torch
import torch

from musev_core.checkpoint import CheckpointError, CheckpointFile, read_state_dict, split_motion_state_dict
from musev_core.motion_module import build_motion_module, load_motion_module


@pytest.fixture(scope="module")
def released_keys(shared_dir):
    with open(os.path.join(shared_dir, "fixtures", "checkpoint_keys", "keys.json")) as f:
        return json.load(f)


def meta_state_dict(shapes):
    return {k: torch.empty(s, device="meta") for k, s in shapes.items()}


def test_all_871_musev_keys_are_consumed_with_their_shapes(released_keys):
    musev = released_keys["musev"]
    sd15 = released_keys["sd15_unet2d"]
    module, info = build_motion_module(meta_state_dict(musev), device="meta", name="musev")
    assert info["flavour"] == "musev"
    assert info["musev_keys"] == 871 and info["sd_keys_ignored"] == 686
    consumed = module.state_dict()
    assert set(consumed) == set(musev) - set(sd15)
    for key, tensor in consumed.items():
        assert list(tensor.shape) == musev[key], key
    assert module.layout.transformer_in and [lv.channels for lv in module.layout.down] == [320, 640, 1280, 1280]


def test_all_939_referencenet_keys_are_consumed_with_their_shapes(released_keys):
    shapes = released_keys["musev_referencenet"]
    module, info = build_motion_module(meta_state_dict(shapes), device="meta", name="x")
    assert info["flavour"] == "musev_referencenet"
    assert info["musev_keys"] == 939 and info["sd_keys_ignored"] == 686
    consumed = module.state_dict()
    assert set(consumed) == set(shapes) - set(released_keys["sd15_unet2d"])
    for key, tensor in consumed.items():
        assert list(tensor.shape) == shapes[key], key
    assert not module.layout.transformer_in and module.zeroes_condition_temb and module.scales_frame_index


def test_fusion_attentions_read_musev_feature_indices_with_the_last_block_quirk(released_keys):
    module, _ = build_motion_module(meta_state_dict(released_keys["musev_referencenet"]), device="meta", name="x")
    features = {prefix: feature for prefix, _, feature in module.reference_fusions()}
    assert len(features) == 13
    assert features["first_refer_emb_attns"] == 0 and features["mid_block_refer_emb_attns"] == "mid"
    assert [features[f"down_blocks.0.refer_emb_attns.{j}"] for j in range(3)] == [1, 2, 3]
    assert [features[f"down_blocks.2.refer_emb_attns.{j}"] for j in range(3)] == [7, 8, 9]
    # MuseV slices the last block from 1 + 2*3: level 2's layer features, not 10 and 11
    assert [features[f"down_blocks.3.refer_emb_attns.{j}"] for j in range(2)] == [7, 8]
    ip = dict(module.ip_adapter_kvs())
    assert len(ip) == 16 and "mid_block.attentions.0.transformer_blocks.0.attn2" in ip
    assert "up_blocks.3.attentions.2.transformer_blocks.0.attn2" in ip
    assert ip["up_blocks.1.attentions.0.transformer_blocks.0.attn2"].to_k_ip.weight.shape == (1280, 768)


@pytest.mark.parametrize("keys, expected", [
    ({"model.diffusion_model.input_blocks.0.0.weight": [320, 4, 3, 3]}, "single-file Stable Diffusion checkpoint"),
    ({"down_blocks.0.motion_modules.0.temporal_transformer.norm.weight": [320]}, "AnimateDiff motion module"),
    ({"conv_in.weight": [320, 4, 3, 3], "up_blocks.0.resnets.0.conv1.weight": [1, 1, 3, 3]}, "plain SD1.5 UNet"),
    ({"conv_in.weight": [320, 4, 3, 3], "down_blocks.0.resnets.0.conv1.weight": [1, 1, 3, 3]}, "MuseV ReferenceNet"),
])
def test_foreign_files_are_refused_with_what_they_are(keys, expected):
    with pytest.raises(CheckpointError) as err:
        split_motion_state_dict(meta_state_dict(keys), "file.safetensors")
    message = str(err.value)
    assert "file.safetensors is not a MuseV motion checkpoint" in message
    assert "expected a MuseV UNet with temporal layers" in message and expected in message


def test_released_sd_unet_is_refused(released_keys):
    with pytest.raises(CheckpointError, match="plain SD1.5 UNet in diffusers layout"):
        split_motion_state_dict(meta_state_dict(released_keys["sd15_unet2d"]), "unet.safetensors")


def test_incomplete_motion_checkpoint_is_refused(released_keys):
    keys = dict(released_keys["musev"])
    keys.pop("down_blocks.1.temp_attentions.0.proj_out.weight")
    with pytest.raises(CheckpointError, match="missing 1: \\['down_blocks.1.temp_attentions.0.proj_out.weight'\\]"):
        build_motion_module(meta_state_dict(keys), device="meta", name="broken")


def test_truncated_and_missing_files(tmp_path):
    path = tmp_path / "motion.safetensors"
    safetensors.torch.save_file({"frame_embedding.linear_1.weight": torch.zeros(8, 4)}, str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="could not read motion.safetensors: the file is truncated"):
        read_state_dict(str(path))
    with pytest.raises(CheckpointError, match="model file not found"):
        read_state_dict(str(tmp_path / "absent.safetensors"))


def test_bin_files_are_read_with_weights_only(tmp_path):
    path = tmp_path / "motion.bin"
    torch.save({"a": torch.ones(2)}, str(path))
    assert torch.equal(read_state_dict(str(path))["a"], torch.ones(2))

    import argparse  # a pickled object that is not a tensor: weights_only refuses to build it
    torch.save({"a": argparse.Namespace(x=1)}, str(path))
    with pytest.raises(CheckpointError, match="could not read motion.bin: the file contains code"):
        read_state_dict(str(path))


class _RunsCode:
    """Pickles as a call of os.system: loading it without weights_only would run a shell command."""

    def __reduce__(self):
        return os.system, ("echo this-ran",)


def test_a_pickle_that_would_run_code_is_refused_for_safety(tmp_path):
    path = tmp_path / "motion.bin"
    torch.save({"a": torch.ones(2), "b": _RunsCode()}, str(path))
    with pytest.raises(CheckpointError) as err:
        read_state_dict(str(path))
    message = str(err.value)
    assert re.fullmatch(r"could not read motion\.bin: the file contains code \(it imports '\w+\.system'\) besides "
                        r"tensors and was refused for safety; only files of plain tensors are loaded\. Use the "
                        r"file as released \(or its \.safetensors version\)", message), message
    assert "weights_only" not in message and "truncated" not in message
    assert err.value.__cause__ is None  # torch's hint to retry with weights_only=False is not chained either


@pytest.mark.parametrize("suffix, legacy", [(".safetensors", False), (".bin", False), (".bin", True)])
def test_nan_or_inf_weights_name_the_file_and_the_first_bad_tensor(tmp_path, suffix, legacy):
    path = tmp_path / f"motion{suffix}"
    bad = torch.ones(3, 4)
    bad[1, 2] = float("nan")
    tensors = {"a.weight": torch.ones(2), "b.weight": bad, "c.weight": torch.full((2,), float("inf"))}
    if suffix == ".safetensors":
        safetensors.torch.save_file(tensors, str(path))
    else:
        torch.save(tensors, str(path), _use_new_zipfile_serialization=not legacy)
    with pytest.raises(CheckpointError) as err:
        read_state_dict(str(path))
    assert str(err.value) == (f"motion{suffix} is damaged: tensor 'b.weight' holds NaN or infinite values; "
                              f"re-download the file")
    with CheckpointFile(str(path)) as checkpoint:
        assert torch.equal(checkpoint.read(["a.weight"])["a.weight"], torch.ones(2))


def test_overflow_on_conversion_is_reported(tmp_path):
    path = tmp_path / "r.safetensors"
    safetensors.torch.save_file({"w": torch.tensor([1.0, 1e6])}, str(path))
    with CheckpointFile(str(path)) as checkpoint, pytest.raises(CheckpointError) as err:
        checkpoint.read(["w"], dtype=torch.float16)
    assert str(err.value) == ("r.safetensors is damaged: tensor 'w' holds NaN or infinite values (stored as "
                              "torch.float32, converted to torch.float16); re-download the file")


@pytest.mark.parametrize("suffix, legacy", [(".safetensors", False), (".bin", False), (".bin", True)])
def test_checkpoint_file_reads_only_the_asked_tensors_converted(tmp_path, suffix, legacy):
    path = tmp_path / f"f{suffix}"
    tensors = {"keep": torch.arange(6, dtype=torch.float16).reshape(2, 3), "skip": torch.zeros(4),
               "steps": torch.tensor([3], dtype=torch.int64)}
    if suffix == ".safetensors":
        safetensors.torch.save_file(tensors, str(path))
    else:
        torch.save({"state_dict": tensors}, str(path), _use_new_zipfile_serialization=not legacy)
    with CheckpointFile(str(path)) as checkpoint:
        assert sorted(checkpoint.keys()) == ["keep", "skip", "steps"] and "skip" in checkpoint
        meta = checkpoint.meta_state_dict()
        assert meta["keep"].device.type == "meta" and meta["keep"].dtype == torch.float16
        assert tuple(meta["keep"].shape) == (2, 3)
        read = checkpoint.read(["keep", "steps"], dtype=torch.float32)
    assert set(read) == {"keep", "steps"}
    assert read["keep"].dtype == torch.float32 and torch.equal(read["keep"], torch.arange(6.0).reshape(2, 3))
    assert read["steps"].dtype == torch.int64  # integers are never converted
    read["keep"].add_(1)  # owned memory: writing does not touch the file
    with CheckpointFile(str(path)) as checkpoint:
        assert torch.equal(checkpoint.read(["keep"])["keep"], tensors["keep"])
        with pytest.raises(CheckpointError, match="f.* lacks the tensor 'absent'"):
            checkpoint.read(["absent"])


def test_large_and_scalar_tensors_are_copied_whole(tmp_path):
    path = tmp_path / "big.safetensors"
    big = torch.randn(3001, 1024, generator=torch.Generator().manual_seed(0))  # 12 MB: copied in 1 MB blocks
    safetensors.torch.save_file({"big": big, "scalar": torch.tensor(2.5)}, str(path))
    with CheckpointFile(str(path)) as checkpoint:
        read = checkpoint.read(["big", "scalar"], dtype=torch.float16)
    assert torch.equal(read["big"], big.half()) and read["scalar"].shape == () and read["scalar"].item() == 2.5


def test_motion_module_loads_from_the_file_with_only_its_musev_tensors(shared_dir, tmp_path):
    source = os.path.join(shared_dir, "fixtures", "musev_parity", "tiny_unet_musev.safetensors")
    weights = safetensors.torch.load_file(source)
    path = tmp_path / "prefixed.bin"
    torch.save({"unet." + k: v for k, v in weights.items()}, str(path))
    module, info = load_motion_module(str(path), dtype=torch.float64)
    assert info == {"flavour": "musev", "musev_keys": 871, "sd_keys_ignored": 684}
    for key, tensor in module.state_dict().items():
        assert tensor.dtype == torch.float64 and torch.equal(tensor, weights[key].double()), key
    assert all(p.device.type == "cpu" for p in module.parameters())


@pytest.mark.parametrize("name, total", [("tiny_unet_musev", 1555), ("tiny_unet_musev_referencenet", 1623)])
def test_tiny_fixture_loads_strictly(shared_dir, name, total):
    weights = safetensors.torch.load_file(
        os.path.join(shared_dir, "fixtures", "musev_parity", f"{name}.safetensors"))
    module, info = build_motion_module(weights, name="tiny")
    assert info["musev_keys"] + info["sd_keys_ignored"] == len(weights) == total
    for key, tensor in module.state_dict().items():
        assert torch.equal(tensor, weights[key])


def test_image_projection_with_nan_weights_names_the_file_and_tensor(tmp_path):
    from musev_core.reference import load_image_projection
    path = tmp_path / "ip_adapter_image_proj.bin"
    proj = torch.zeros(8, 4)
    proj[3, 1] = float("inf")
    torch.save({"image_proj": {"proj.weight": proj, "proj.bias": torch.zeros(8), "norm.weight": torch.ones(4),
                               "norm.bias": torch.zeros(4)}, "ip_adapter": {"1.to_k_ip.weight": torch.zeros(4, 4)}},
               str(path))
    with pytest.raises(CheckpointError) as err:
        load_image_projection(str(path))
    assert str(err.value) == ("ip_adapter_image_proj.bin is damaged: tensor 'image_proj.proj.weight' holds NaN or "
                              "infinite values; re-download the file")
