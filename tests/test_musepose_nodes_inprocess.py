"""The MusePose nodes in-process on the tiny MusePose files of the parity set (placed in a `musepose` folder)."""
import os
import shutil

import pytest
import torch

import comfy_env
from test_parity_musepose import bank_from, load, parity, parity_dir, rel_err  # noqa: F401  (module fixture)

FILES = {"denoising_unet": "denoising_unet.safetensors", "motion_module": "motion_module.safetensors",
         "reference_unet": "reference_unet.safetensors", "pose_guider": "pose_guider.safetensors"}


@pytest.fixture(scope="module")
def folder(comfy, shared_dir, tmp_path_factory):
    import folder_paths
    root = parity_dir(shared_dir)
    models = tmp_path_factory.mktemp("musepose_models")
    for kind, name in FILES.items():
        shutil.copy(os.path.join(root, f"tiny_{kind}.safetensors"), models / name)
    saved = folder_paths.folder_names_and_paths.get("musepose")
    folder_paths.folder_names_and_paths["musepose"] = ([str(models)], {".safetensors", ".pth"})
    yield models
    if saved is not None:
        folder_paths.folder_names_and_paths["musepose"] = saved


@pytest.fixture(scope="module")
def mp_nodes(comfy):
    return comfy_env.pack_module("nodes.musepose_nodes")


def test_nodes_are_registered_with_tooltips(comfy):
    for name in ("LoadMusePose", "MusePoseImageConditioning", "MusePoseReferenceEncode", "MusePoseSampler",
                 "MusePoseDDIMSampler", "MusePoseScheduler"):
        cls = comfy.NODE_CLASS_MAPPINGS[name]
        assert name in comfy.NODE_DISPLAY_NAME_MAPPINGS and cls.DESCRIPTION
        for inputs in cls.INPUT_TYPES().values():
            for spec in inputs.values():
                assert spec[1].get("tooltip"), (name, spec)


def test_musepose_folder_lists_the_files_and_defaults(folder, mp_nodes):
    inputs = mp_nodes.LoadMusePose.INPUT_TYPES()["required"]
    for kind in ("denoising_unet", "motion_module", "pose_guider"):
        assert inputs[kind][0] == sorted(FILES.values())
        assert inputs[kind][1]["default"] == FILES[kind]
    assert mp_nodes.MusePoseReferenceEncode.INPUT_TYPES()["required"]["reference_unet"][1]["default"] == \
        FILES["reference_unet"]


def test_loader_builds_a_musepose_model_and_refuses_swapped_files(folder, mp_nodes):
    adapter = comfy_env.pack_module("nodes.musepose_model")
    model = mp_nodes.LoadMusePose().load(FILES["denoising_unet"], FILES["motion_module"], FILES["pose_guider"])[0]
    assert adapter.is_musepose_model(model)
    sampling = model.get_model_object("model_sampling")
    assert isinstance(sampling, adapter.MusePoseModelSampling)
    assert float(sampling.musepose_alphas[-1]) == 0.0
    with pytest.raises(Exception) as info:
        mp_nodes.LoadMusePose().load(FILES["reference_unet"], FILES["motion_module"], FILES["pose_guider"])
    assert str(info.value).startswith("Load MusePose: reference_unet.safetensors is not MusePose's denoising_unet.pth")
    with pytest.raises(Exception) as info:
        mp_nodes.LoadMusePose().load(FILES["denoising_unet"], FILES["pose_guider"], FILES["pose_guider"])
    assert str(info.value).startswith("Load MusePose: pose_guider.safetensors is not MusePose's motion_module.pth")


class _Output:
    def __init__(self, embeds):
        self.image_embeds = embeds

    def __getitem__(self, key):
        return getattr(self, key)


def test_image_conditioning_is_one_token_and_zeros(mp_nodes, parity):
    data = load(parity, "unet_forward")
    positive, negative = mp_nodes.MusePoseImageConditioning().encode(_Output(data["clip_image_embeds"]))
    assert torch.equal(positive[0][0], data["encoder_hidden_states"][1:2])
    assert torch.equal(negative[0][0], data["encoder_hidden_states"][0:1])


class _FixtureVAE:
    """The VAE is ComfyUI's; this double returns the fixture's posterior mean for the fixture's image, so the test
    covers the node's resize, its latent scaling and the bank."""

    def __init__(self, image, latent):
        self.image, self.latent = image, latent

    def encode(self, pixels):
        assert rel_err(pixels.movedim(-1, 1), self.image) < 1e-6
        return self.latent / 0.18215


def test_reference_node_runs_the_adapter_on_the_vae_mean(folder, mp_nodes, parity):
    """The node = VAE mean x 0.18215 + the reference UNet at t = 0 on the one-token context (the adapter's bank is
    checked against MusePose in test_parity_musepose; the node loads the released geometry's 32 GroupNorm groups,
    the tiny set uses 16, so the node is compared with the adapter here)."""
    adapter = comfy_env.pack_module("nodes.musepose_model")
    data = load(parity, "unet_forward")
    image = data["ref_image"] / 255  # already the video size: the Lanczos resize is a no-op, as in the fixture
    vae = _FixtureVAE(image, data["ref_image_latents"])
    context = data["clip_image_embeds"][:, None]
    reference = mp_nodes.MusePoseReferenceEncode().encode(FILES["reference_unet"], vae, image.movedim(1, -1),
                                                          [[context, {}]])[0]
    patcher = comfy_env.pack_module("nodes.musepose_reference").load_reference_unet(str(folder / FILES["reference_unet"]))[0]
    expected = comfy_env.pack_module("nodes.musepose_reference").encode_reference(patcher, data["ref_image_latents"], context)
    assert reference.latent_hw == (16, 16)
    assert set(reference.features) == {pair["writer"] for pair in parity["report"]["bank_pairs"]}
    for name, tensor in expected.features.items():
        assert reference.features[name].dtype == torch.float16
        assert rel_err(reference.features[name], tensor) < 1e-6
    with pytest.raises(ValueError, match=r"positive must be MusePose's one-token image conditioning"):
        mp_nodes.MusePoseReferenceEncode().encode(FILES["reference_unet"], vae, image.movedim(1, -1),
                                                  [[torch.zeros(1, 77, 24), {}]])


def test_sampler_node_pads_to_whole_windows_and_cuts_back(mp_nodes, parity):
    adapter = comfy_env.pack_module("nodes.musepose_model")
    sampling = comfy_env.pack_module("nodes.musepose_sampling")
    data = load(parity, "pipeline")
    positive = [[data["clip_image_embeds"][:, None], {}]]
    negative = [[torch.zeros(1, 1, data["clip_image_embeds"].shape[-1]), {}]]
    reference = bank_from(parity, load(parity, "unet_forward"))
    pose = data["pose_images"][0, :, :8].permute(1, 2, 3, 0) / 255  # 8 frames, windows of 4 overlapping 1
    model = parity["model"]
    node = lambda pad: mp_nodes.MusePoseSampler().sample(model, positive, negative, reference, pose, 3, 1, 3.5,
                                                          "musepose_ddim", "musepose_trailing", 4, 1, pad)[0]
    padded, wrapped = node(True)["samples"], node(False)["samples"]
    assert padded.shape == wrapped.shape == (8, 4, 16, 16)
    # padding repeats the last pose twice (10 frames: windows [0-3] [3-6] [6-9], none wraps), then cuts back
    features = adapter.pose_features(model, pose)
    manual = torch.cat([features, features[-1:], features[-1:]])
    sampler, sigmas = sampling.sampler_and_sigmas(model, "musepose_ddim", "musepose_trailing", 1)
    expected = sampling.musepose_sample(model, positive, negative, manual, reference, 3, sampler, sigmas, 3.5, 4, 1,
                                        pad_to_windows=False)
    assert expected.shape[0] == 10 and torch.equal(padded, expected[:8])
    assert rel_err(wrapped, padded) > 1e-3  # without padding the last window [6, 7, 0, 1] wraps around


def test_sampler_validates_window_settings(mp_nodes):
    assert mp_nodes.MusePoseSampler.VALIDATE_INPUTS(context_frames=8, context_overlap=8) == (
        "context_overlap (8) must be smaller than context_frames (8): windows would never advance")
    assert mp_nodes.MusePoseSampler.VALIDATE_INPUTS(context_frames=48, context_overlap=4) is True


def test_scheduler_and_sampler_nodes(mp_nodes, parity):
    sigmas = mp_nodes.MusePoseScheduler().get_sigmas(parity["model"], 3)[0]
    sampling = parity["model"].get_model_object("model_sampling")
    assert [int(sampling.timestep(s.reshape(1))) for s in sigmas[:-1]] == \
        parity["report"]["pipeline"]["timesteps"]
    assert float(sigmas[-1]) == 0.0
    import comfy.samplers
    assert isinstance(mp_nodes.MusePoseDDIMSampler().get_sampler()[0], comfy.samplers.KSAMPLER)


def test_cancel_stops_sampling_between_windows(parity):
    import comfy.model_management
    sampling = comfy_env.pack_module("nodes.musepose_sampling")
    adapter = comfy_env.pack_module("nodes.musepose_model")
    data = load(parity, "pipeline")
    model = parity["model"]
    embeds = data["clip_image_embeds"][:, None]
    features = adapter.pose_features(model, data["pose_images"][0, :, :6].permute(1, 2, 3, 0) / 255)
    sampler, sigmas = sampling.sampler_and_sigmas(model, "musepose_ddim", "musepose_trailing", 2)
    steps = []

    def cancel_after_first_step(step, x0, x, total):
        steps.append(step)
        comfy.model_management.interrupt_current_processing(True)

    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            sampling.musepose_sample(model, [[embeds, {}]], [[torch.zeros_like(embeds), {}]], features, None, 0,
                                     sampler, sigmas, 3.5, 4, 1, callback=cancel_after_first_step)
    finally:
        comfy.model_management.interrupt_current_processing(False)
    assert steps == [0]
