"""Every workflow in workflows/ queued through a real ComfyUI server (0.3.75 and 0.7.0 in CI) (HTTP API) on a real image.

Tiny generated models replace the real ones; sizes and steps are reduced so the suite runs on a CPU, frame counts
are kept (the long video really is 121 frames through 15 windows).
"""
import io
import json
import os

import av
import pytest

import comfy_server
import tiny_models

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 64  # pixels: 8x8 latent cells


def load_api(name):
    with open(os.path.join(REPO, "workflows", f"{name}_api.json")) as f:
        return json.load(f)


def nodes_of(prompt, class_type):
    return [node for node in prompt.values() if node["class_type"] == class_type]


def for_tiny_models(prompt, server, uploads=None, steps=2):
    """Point a shipped workflow at the tiny models, the uploaded media, a small size and few steps.

    `uploads` maps the workflow's image/video names to uploaded names (a plain string: every Load Image uses it).
    """
    tiny_models.point_at_tiny_models(prompt, server.models)
    for node in nodes_of(prompt, "LoadImage"):
        image = node["inputs"]["image"]
        node["inputs"]["image"] = uploads if isinstance(uploads, str) else uploads[image]
    for node in nodes_of(prompt, "LoadVideo"):
        node["inputs"]["file"] = uploads[node["inputs"]["file"]]
    for node in nodes_of(prompt, "ImageScale") + nodes_of(prompt, "EmptyLatentImage"):
        node["inputs"]["width"] = node["inputs"]["height"] = SIZE
    for node in nodes_of(prompt, "KSampler") + nodes_of(prompt, "MuseVParallelDenoiseSampler"):
        node["inputs"]["steps"] = steps
    for node in nodes_of(prompt, "MusePoseSampler"):  # the 16-frame excerpt in windows of 8: 3 per step
        node["inputs"].update(steps=steps, context_frames=8, context_overlap=2)
    for node in nodes_of(prompt, "MuseVDWPoseExtract"):
        node["inputs"]["resolution"] = SIZE
        node["inputs"]["detect_resolution"] = SIZE
    for node in nodes_of(prompt, "MuseVPoseAlign"):
        node["inputs"]["output_height"] = node["inputs"]["width"] = SIZE
    return prompt


def video_excerpt(source: str, target: str, frames: int = 16, width: int = 96) -> str:
    """The first `frames` frames of a real video, scaled to `width` (even height), as an h264 mp4 (keeps CI fast:
    Load Video decodes whole files into memory)."""
    with av.open(source) as container:
        stream = container.streams.video[0]
        height = int(round(stream.codec_context.height * width / stream.codec_context.width / 2)) * 2
        images = []
        for frame in container.decode(video=0):
            images.append(frame.reformat(width=width, height=height, format="rgb24").to_ndarray())
            if len(images) == frames:
                break
    with av.open(target, "w") as out:
        video = out.add_stream("libx264", rate=24)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        for image in images:
            for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
    return target


@pytest.fixture(scope="module")
def uploads(server, shared_dir, tmp_path_factory):
    """Every image and video the shipped workflows name, uploaded (videos as short excerpts of the real files)."""
    names = {}
    for image in ("Mona_Lisa.jpg", "musepose_ref.png", "cyber_girl.png"):
        names[image] = server.upload_image(os.path.join(shared_dir, "data", "images", image))
    folder = tmp_path_factory.mktemp("videos")
    for video in ("video1_girl_poseseq.mp4", "musepose_dance.mp4"):
        excerpt = video_excerpt(os.path.join(shared_dir, "data", "videos", video), str(folder / video))
        names[video] = server.upload_image(excerpt)
    return names


def video_frames(data: bytes):
    with av.open(io.BytesIO(data)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    return frames


@pytest.fixture(scope="module")
def uploaded_image(server, shared_dir):
    return server.upload_image(os.path.join(shared_dir, "data", "images", "Mona_Lisa.jpg"))


def test_pack_imports_cleanly_and_registers_its_nodes(server):
    log = server.log()
    assert "IMPORT FAILED" not in log, log
    info = server.get_json("/object_info/MuseVParallelDenoiseSampler")["MuseVParallelDenoiseSampler"]
    assert info["display_name"] == "MuseV Parallel Denoise Sampler"
    assert info["input"]["required"]["steps"][1]["default"] == 10
    assert info["input"]["required"]["cfg"][1]["default"] == 3.5
    assert all("tooltip" in spec[1] for spec in info["input"]["required"].values())
    loader = server.get_json("/object_info/LoadMuseVUNet")["LoadMuseVUNet"]
    assert server.models["musev_unet"] in loader["input"]["required"]["unet_name"][0]


@pytest.mark.parametrize("name, expected_frames", [("image2video", 13), ("text2image2video", 12),
                                                     ("long_video", 121), ("image2video_referencenet", 13),
                                                     ("pose2video", 13), ("pose2video_align", 13),
                                                     ("video2video", 13), ("image2video_ipadapter_plus", 9),
                                                     ("musepose_pose2video", 16)])
def test_workflow_makes_an_mp4(server, uploads, name, expected_frames):
    prompt = for_tiny_models(load_api(name), server, uploads)
    history = server.run(prompt)
    assert history["status"]["status_str"] == "success", comfy_server.error_message(history)
    videos = [item for item in comfy_server.saved_files(history) if item["filename"].endswith(".mp4")]
    assert len(videos) == 1, history["outputs"]
    assert videos[0]["subfolder"] == "musev"
    data = server.view(videos[0])
    frames = video_frames(data)
    assert len(frames) == expected_frames
    assert frames[0].shape == (SIZE, SIZE, 3)
    # video workflows play at the input video's rate (the excerpts are 24 fps), the others at Create Video's 12
    with av.open(io.BytesIO(data)) as container:
        fps = container.streams.video[0].average_rate
    assert fps == (24 if name in ("pose2video", "pose2video_align", "video2video", "musepose_pose2video") else 12), fps
    if name == "pose2video_align":  # the Pose Align report is shown (Preview Any's text)
        texts = [output["text"] for output in history["outputs"].values() if "text" in output]
        assert len(texts) == 1 and texts[0][0].startswith("12 frames aligned (robust); scales from frame 0: "), texts


def node_id(prompt, class_type):
    return [k for k, v in prompt.items() if v["class_type"] == class_type][0]


def queue_errors(server, prompt):
    """Queue a prompt that must be refused; its node_errors as {node id: [(input name, type, details), ...]}."""
    status, body = server.queue(prompt)
    assert status == 400, body
    return {node: [(e["extra_info"].get("input_name"), e["type"], e["details"]) for e in entry["errors"]]
            for node, entry in body["node_errors"].items()}


def test_bad_inputs_are_refused_at_queue_time_once_under_their_input(server, uploaded_image):
    """Every entry of node_errors is checked: one message per problem, under the input it is about (the one
    two-input rule is reported under both of its inputs, which is how ComfyUI attaches VALIDATE_INPUTS results)."""
    def refused(changes, class_type="MuseVParallelDenoiseSampler", workflow="image2video"):
        prompt = for_tiny_models(load_api(workflow), server, uploaded_image)
        target = node_id(prompt, class_type)
        prompt[target]["inputs"].update(changes)
        errors = queue_errors(server, prompt)
        assert list(errors) == [target], errors
        return errors[target]

    overlap = "context_overlap (12) must be smaller than context_frames (12): windows would never advance"
    assert sorted(refused({"context_overlap": 12})) == [
        ("context_frames", "custom_validation_failed", f"context_frames - {overlap}"),
        ("context_overlap", "custom_validation_failed", f"context_overlap - {overlap}")]
    too_long = "context_frames must be between 1 and 256, got 300"
    assert sorted(refused({"context_frames": 300})) == [
        ("context_frames", "custom_validation_failed", f"context_frames - {too_long}"),
        ("context_overlap", "custom_validation_failed", f"context_overlap - {too_long}")]
    # declared maximums hold (frames 5000 / 10^9 / = context_frames = 2000 used to run until memory ran out)
    assert refused({"frames": 5000}) == [("frames", "value_bigger_than_max", "frames")]
    assert refused({"frames": 10 ** 9}) == [("frames", "value_bigger_than_max", "frames")]
    assert sorted(refused({"frames": 2000, "context_frames": 2000})) == [
        ("context_frames", "custom_validation_failed", "context_frames - context_frames must be between 1 and 256, "
                                                       "got 2000"),
        ("context_overlap", "custom_validation_failed", "context_overlap - context_frames must be between 1 and "
                                                        "256, got 2000")]  # 2000 frames alone are fine
    assert refused({"frames": 0}) == [("frames", "value_smaller_than_min", "frames")]
    assert refused({"width": 8200}) == [("width", "value_bigger_than_max", "width")]
    # non-finite floats (they used to give a black video reported as success)
    for name in ("cfg", "motion_speed", "w_ind_noise", "img_weight", "denoise"):
        assert refused({name: float("nan")}) == [(name, "value_smaller_than_min", name)]
    assert refused({"cfg": float("inf")}) == [("cfg", "value_bigger_than_max", "cfg")]
    assert refused({"img_weight": float("-inf")}) == [("img_weight", "value_smaller_than_min", "img_weight")]
    assert refused({"scale": float("nan")}, "MuseVIPAdapterEmbed", "image2video_referencenet") == [
        ("scale", "value_smaller_than_min", "scale")]
    assert refused({"unet_name": "missing/unet.safetensors"}, "LoadMuseVUNet")[0][:2] == (
        "unet_name", "value_not_in_list")


def test_width_not_a_multiple_of_8_is_a_clear_error(server, uploaded_image):
    prompt = for_tiny_models(load_api("image2video"), server, uploaded_image)
    prompt[node_id(prompt, "MuseVParallelDenoiseSampler")]["inputs"]["width"] = 100
    history = server.run(prompt)
    assert history["status"]["status_str"] == "error"
    assert comfy_server.error_message(history).strip().endswith(
        "width must be 0 (= the condition's size) or a multiple of 8 pixels, got 100")


def test_size_mismatch_is_a_clear_error_not_a_traceback(server, uploaded_image):
    prompt = for_tiny_models(load_api("image2video"), server, uploaded_image)
    sampler_id = [k for k, v in prompt.items() if v["class_type"] == "MuseVParallelDenoiseSampler"][0]
    prompt[sampler_id]["inputs"]["width"] = 2 * SIZE
    history = server.run(prompt)
    assert history["status"]["status_str"] == "error"
    message = comfy_server.error_message(history)
    assert "the condition latent is 64x64 px (8x8 latent cells) but width x height ask for 128x0 px" in message


def test_cancel_during_sampling_leaves_the_server_healthy(server, uploaded_image):
    import time
    slow = for_tiny_models(load_api("long_video"), server, uploaded_image, steps=50)
    log_start = len(server.log())
    status, body = server.queue(slow)
    assert status == 200
    prompt_id = body["prompt_id"]
    deadline = time.time() + 120
    while "/50 [" not in server.log()[log_start:]:  # the sampler's progress bar has started
        assert time.time() < deadline, server.log()[log_start:]
        time.sleep(0.2)
    started = time.time()
    assert server.post("/interrupt", {})[0] == 200
    history = server.wait(prompt_id, timeout=120)
    assert time.time() - started < 60
    assert history["status"]["status_str"] == "error"
    assert any(event == "execution_interrupted" for event, _ in history["status"]["messages"])
    after = server.run(for_tiny_models(load_api("image2video"), server, uploaded_image))
    assert after["status"]["status_str"] == "success"


def execution_error(history: dict) -> dict:
    return [data for event, data in history["status"]["messages"] if event == "execution_error"][0]


def test_pack_errors_name_the_pack_and_node_not_the_servers_paths(server, uploads):
    """A pack error's type is `MuseV.<Class>` (not the pack's absolute folder) and its message names the node."""
    prompt = for_tiny_models(load_api("pose2video_align"), server, uploads)
    pose = [k for k, v in prompt.items() if v["_meta"]["title"] == "Character pose"][0]
    inputs = prompt[pose]["inputs"]
    inputs["bbox_detector"], inputs["pose_estimator"] = inputs["pose_estimator"], inputs["bbox_detector"]
    history = server.run(prompt)
    assert history["status"]["status_str"] == "error"
    error = execution_error(history)
    assert error["exception_type"] == "MuseV.PoseModelError"
    assert error["node_id"] == pose and error["node_type"] == "MuseVDWPoseExtract"
    assert error["exception_message"].startswith(
        f"MuseV DWPose Extract: {server.models['dwpose_pose']}: expected a YOLOX detector"), error["exception_message"]
    assert os.sep + "custom_nodes" not in error["exception_type"]
def test_musepose_wrong_file_and_bad_windows_are_clear_errors(server, uploads):
    prompt = for_tiny_models(load_api("musepose_pose2video"), server, uploads)
    sampler_id = [k for k, v in prompt.items() if v["class_type"] == "MusePoseSampler"][0]
    prompt[sampler_id]["inputs"]["context_overlap"] = 8
    # ComfyUI accepts a prompt when any output validates and runs only those: drop the Pose Align report output so
    # the refusal is the whole answer
    for node_id in [k for k, v in prompt.items() if v["class_type"] == "PreviewAny"]:
        del prompt[node_id]
    status, body = server.queue(prompt)
    assert status == 400
    assert body["node_errors"][sampler_id]["errors"][0]["details"].endswith(
        "context_overlap (8) must be smaller than context_frames (8): windows would never advance")

    prompt = for_tiny_models(load_api("musepose_pose2video"), server, uploads)
    loader = [v for v in prompt.values() if v["class_type"] == "LoadMusePose"][0]
    loader["inputs"]["motion_module"] = server.models["musepose_pose_guider"]
    history = server.run(prompt)
    assert history["status"]["status_str"] == "error"
    assert "pose_guider.pth is not MusePose's motion_module.pth" in comfy_server.error_message(history)
