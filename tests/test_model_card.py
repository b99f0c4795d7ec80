"""Model cards come from the manifest entry and parse as Hub model cards."""
import pytest
from huggingface_hub import ModelCard

from mixer_zoo.weights.manifest import load_manifest, weights_entries
from mixer_zoo.weights.model_card import render_model_card

CONVERTED = [name for name, e in weights_entries().items() if e.get("source")]


@pytest.mark.parametrize("name", CONVERTED)
def test_card_front_matter_and_facts_come_from_the_entry(name):
    entry = weights_entries()[name]
    card = ModelCard(render_model_card(entry))
    data = card.data.to_dict()
    assert data["library_name"] == "timm"
    assert data["license"] == entry["license"]
    assert data["tags"] == ["image-classification", "timm", "mlp-mixer"]
    assert entry["label_set"] in data["datasets"]
    assert ("imagenet-21k" in data["datasets"]) == ("in21k" in entry["tag"])
    assert f"# Model card for {name}" in card.text
    assert entry["source"]["url"] in card.text
    assert f"hf-hub:{entry['hf_hub_id']}" in card.text
    assert load_manifest()["citations"]["2105.01601"] in card.text
    assert f"arxiv.org/abs/{entry['paper']['arxiv']}" in card.text


def test_metrics_with_their_source_and_conversion_details_are_rendered():
    entry = dict(weights_entries()["mixer_b16_zoo.goog_in21k_ft_in1k"])
    entry["metrics"] = {"reported": {"imagenet-1k": {"top1": 76.44, "source": "timm results CSV"}},
                        "measured": {"imagenet-1k": {"top1": {"value": 76.4, "source": "mixer-zoo eval"}}}}
    text = render_model_card(entry, extra={"source_sha256": "ab" * 32, "converter": "mixer-zoo-convert 0.1.0"})
    assert "| reported | imagenet-1k.top1 | 76.44 | timm results CSV |" in text
    assert "| measured | imagenet-1k.top1 | 76.4 | mixer-zoo eval |" in text
    assert "## Conversion" in text and f"`{'ab' * 32}`" in text and "mixer-zoo-convert 0.1.0" in text


def test_an_entry_without_metrics_says_so():
    entry = dict(weights_entries()["mixer_s32_zoo.gsam_in1k"], metrics={"reported": {}, "measured": {}})
    assert "No metrics recorded" in render_model_card(entry)
