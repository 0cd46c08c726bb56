"""Widget labels fit: long input names get short display labels through ComfyUI's custom-node translations
(locales/en/main.json, served at /i18n by 0.3.75 and newer), so the API field names of saved prompts stay as they are."""
import json
import os

from clean_imports import REPO

LONGEST = 12  # characters a label may have and still show beside a model file name in a node of default width


def labels():
    with open(os.path.join(REPO, "locales", "en", "main.json")) as f:
        return json.load(f)["nodeDefs"]


def test_every_label_names_an_existing_input_and_every_long_widget_name_has_a_short_label(comfy):
    nodes = labels()
    for class_name, entry in nodes.items():
        inputs = comfy.NODE_CLASS_MAPPINGS[class_name].INPUT_TYPES()
        names = {**inputs.get("required", {}), **inputs.get("optional", {})}
        for name, label in entry["inputs"].items():
            assert name in names, (class_name, name)
            assert len(label["name"]) <= LONGEST and label["name"] != name, (class_name, name, label)
    for class_name, node_class in comfy.NODE_CLASS_MAPPINGS.items():
        inputs = node_class.INPUT_TYPES()
        for name, spec in {**inputs.get("required", {}), **inputs.get("optional", {})}.items():
            widget = isinstance(spec[0], list) or spec[0] in ("INT", "FLOAT", "BOOLEAN", "STRING")
            if widget and len(name) > LONGEST and name != "sampler_name":  # KSampler's own label, kept alike
                assert name in nodes.get(class_name, {}).get("inputs", {}), f"{class_name}.{name} needs a label"
    assert nodes["LoadMuseVUNet"]["inputs"]["unet_name"]["name"] == "unet"


def test_the_server_serves_the_labels_to_the_page(server):
    served = server.get_json("/i18n")["en"]["nodeDefs"]
    assert served["LoadMuseVUNet"]["inputs"]["unet_name"]["name"] == "unet"
    assert served["MuseVParallelDenoiseSampler"] == labels()["MuseVParallelDenoiseSampler"]
