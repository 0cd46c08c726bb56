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
                 "bbox_detector", "pose_estimator", "denoising_unet", "motion_module", "pose_guider", "reference_unet",
                 "vae_name") if key in node["inputs"]}
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
