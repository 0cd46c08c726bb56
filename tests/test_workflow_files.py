"""The shipped workflow files: generated from tests/workflow_graphs.py, UI and API twins consistent, no paths."""
import json
import os

import workflow_graphs

REPO = workflow_graphs.REPO


def test_committed_files_equal_the_graph_definitions():
    for name, text in workflow_graphs.rendered().items():
        path = os.path.join(REPO, "workflows", name)
        assert os.path.isfile(path), f"{name} missing: run python tests/workflow_graphs.py"
        with open(path) as f:
            assert f.read() == text, f"{name} is stale: run python tests/workflow_graphs.py"


def test_ui_and_api_twins_describe_the_same_graph():
    for name in workflow_graphs.GRAPHS:
        ui = json.load(open(os.path.join(REPO, "workflows", f"{name}.json")))
        api = json.load(open(os.path.join(REPO, "workflows", f"{name}_api.json")))
        real_nodes = {str(n["id"]): n for n in ui["nodes"] if n["type"] != "Note"}
        assert set(real_nodes) == set(api)
        for link_id, source, slot, target, target_slot, kind in ui["links"]:
            input_name = real_nodes[str(target)]["inputs"][target_slot]["name"]
            assert api[str(target)]["inputs"][input_name] == [str(source), slot]
        assert ui["version"] == 0.4 and ui["last_node_id"] == len(ui["nodes"])


def test_workflows_use_standard_loaders_and_no_absolute_paths():
    for name in workflow_graphs.GRAPHS:
        api = json.load(open(os.path.join(REPO, "workflows", f"{name}_api.json")))
        kinds = {node["class_type"] for node in api.values()}
        family = {"LoadMusePose", "MusePoseSampler", "VAELoader"} if name.startswith("musepose") else \
            {"CheckpointLoaderSimple", "LoadMuseVUNet", "MuseVParallelDenoiseSampler"}
        assert {"VAEDecode", "CreateVideo", "SaveVideo"} | family <= kinds
        for node in api.values():
            for value in node["inputs"].values():
                if isinstance(value, str):
                    assert not value.startswith("/") and ":\\" not in value, (name, value)
        ui = json.load(open(os.path.join(REPO, "workflows", f"{name}.json")))
        listed = {(m["folder"], m["name"]) for m in ui["extra"]["musev"]["models"]}
        used = {node["inputs"][key] for node in api.values() for key in
                ("ckpt_name", "unet_name", "referencenet_name", "image_proj_name", "clip_name", "control_net_name",
                 "bbox_detector", "pose_estimator", "ipadapter_file", "denoising_unet", "motion_module", "pose_guider",
                 "reference_unet", "vae_name") if key in node["inputs"]}
        assert used == {n for _, n in listed}, (name, used, listed)
        note = [n for n in ui["nodes"] if n["type"] == "Note"][0]["widgets_values"][0]
        assert all(n in note for n in used), (name, used)


def test_referencenet_workflow_uses_the_image_as_condition_reference_and_ip_image():
    api = json.load(open(os.path.join(REPO, "workflows", "image2video_referencenet_api.json")))
    by_type = {node["class_type"]: (key, node) for key, node in api.items()}
    scale = by_type["ImageScale"][0]
    assert by_type["VAEEncode"][1]["inputs"]["pixels"] == [scale, 0]
    assert by_type["MuseVReferenceNetEncode"][1]["inputs"]["image"] == [scale, 0]
    assert by_type["MuseVIPAdapterEmbed"][1]["inputs"]["image"] == [scale, 0]
    ip = by_type["MuseVIPAdapterEmbed"][0]
    sampler = by_type["MuseVParallelDenoiseSampler"][1]["inputs"]
    assert sampler["ip_tokens"] == [ip, 0] and by_type["MuseVReferenceNetEncode"][1]["inputs"]["ip_tokens"] == [ip, 0]
    assert sampler["reference"] == [by_type["MuseVReferenceNetEncode"][0], 0]
    assert "referencenet" in by_type["LoadMuseVUNet"][1]["inputs"]["unet_name"]


def test_long_video_is_one_run_of_at_least_120_frames():
    api = json.load(open(os.path.join(REPO, "workflows", "long_video_api.json")))
    sampler = [n for n in api.values() if n["class_type"] == "MuseVParallelDenoiseSampler"][0]
    assert sampler["inputs"]["frames"] >= 120
    assert sampler["inputs"]["context_frames"] < sampler["inputs"]["frames"]


def load(name, api=False):
    with open(os.path.join(REPO, "workflows", f"{name}{'_api' if api else ''}.json")) as f:
        return json.load(f)


def test_every_model_file_a_workflow_uses_is_listed_for_the_pages_missing_models_dialog():
    """Per node `properties.models` (name, url, directory), as ComfyUI_frontend's loadGraphData reads them: an entry
    counts when its name is one of the node's widget values; it is listed when the folder lacks that file."""
    allowed = ("https://huggingface.co/TMElyralab/MuseV/resolve/main/motion/",
               "https://huggingface.co/Comfy-Org/stable-diffusion-v1-5-archive/resolve/main/",
               "https://huggingface.co/h94/IP-Adapter/resolve/main/models/",
               "https://huggingface.co/TMElyralab/MusePose/resolve/main/MusePose/",
               "https://huggingface.co/lambdalabs/sd-image-variations-diffusers/resolve/main/image_encoder/",
               "https://huggingface.co/stabilityai/sd-vae-ft-mse-original/resolve/main/",
               "https://huggingface.co/lllyasviel/ControlNet-v1-1/resolve/main/",
               "https://huggingface.co/yzd-v/DWPose/resolve/main/")
    for name in workflow_graphs.GRAPHS:
        ui = load(name)
        listed = set()
        for node in ui["nodes"]:
            for widget, folder in workflow_graphs.MODEL_WIDGETS.get(node["type"], {}).items():
                value = node["widgets_values"][workflow_graphs.WIDGETS[node["type"]].index(widget)]
                entries = [m for m in node["properties"].get("models", []) if m["name"] == value]
                assert len(entries) == 1, (name, node["type"], value)
                entry = entries[0]
                assert set(entry) == {"name", "url", "directory"} and entry["directory"] == folder
                assert entry["url"].startswith(allowed), entry["url"]
                assert entry["url"].split("/")[-1] == value.split("/")[-1] or folder == "clip_vision", entry
                listed.add((folder, value))
        assert listed == {(m["folder"], m["name"]) for m in ui["extra"]["musev"]["models"]}, name
    # MuseV's motion files keep the repository's layout below motion/
    assert workflow_graphs.MODEL_URLS[("musev", workflow_graphs.MUSEV_UNET)] == (
        "https://huggingface.co/TMElyralab/MuseV/resolve/main/motion/musev/unet/diffusion_pytorch_model.bin")
    assert workflow_graphs.MODEL_URLS[("musepose", "denoising_unet.pth")] == (
        "https://huggingface.co/TMElyralab/MusePose/resolve/main/MusePose/denoising_unet.pth")


def test_seeds_randomize_in_the_page_and_stay_concrete_in_the_api_twins():
    for name in workflow_graphs.GRAPHS:
        ui, api = load(name), load(name, api=True)
        for node in ui["nodes"]:
            widgets = workflow_graphs.WIDGETS[node["type"]]
            if "seed" in widgets:
                control = node["widgets_values"][widgets.index("seed") + 1]
                assert control == "randomize", (name, node["type"])
                assert api[str(node["id"])]["inputs"]["seed"] == node["widgets_values"][widgets.index("seed")]


def test_video_workflows_take_fps_and_length_from_one_place():
    for name in ("pose2video", "pose2video_align", "video2video"):
        api = load(name, api=True)
        by_type = {}
        for key, node in api.items():
            by_type.setdefault(node["class_type"], []).append(key)
        parts = by_type["GetVideoComponents"][0]
        assert api[by_type["CreateVideo"][0]]["inputs"]["fps"] == [parts, 2], name
        sampler = api[by_type["MuseVParallelDenoiseSampler"][0]]["inputs"]
        size = sampler["frames"][0]
        assert api[size]["class_type"] == "GetImageSize" and sampler["frames"] == [size, 2], name
        # the only frame count a user sets is the 'length' of the frames-used node
        lengths = [key for key in by_type["ImageFromBatch"] if "sets the length" in api[key]["_meta"]["title"]]
        assert len(lengths) == 1, name
        others = [api[k]["inputs"]["length"] for k in by_type["ImageFromBatch"] if k not in lengths]
        assert all(length in (1, 4096) for length in others), (name, others)
    align = load("pose2video_align", api=True)
    report = [n for n in align.values() if n["class_type"] == "PreviewAny"][0]
    source = report["inputs"]["source"]
    assert align[source[0]]["class_type"] == "MuseVPoseAlign" and source[1] == 2
