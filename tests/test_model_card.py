"""Model cards come from the manifest entry and parse as Hub model cards."""
import pytest
from huggingface_hub import ModelCard

from mixer_zoo.weights.manifest import load_manifest, weights_entries
from mixer_zoo.weights.model_card import card_datasets, render_model_card

CONVERTED = [name for name, e in weights_entries().items() if e.get("source")]


@pytest.mark.parametrize("name", CONVERTED)
def test_card_front_matter_and_facts_come_from_the_entry(name):
    entry = weights_entries()[name]
    card = ModelCard(render_model_card(entry))
    data = card.data.to_dict()
    assert data["library_name"] == "timm" and data["pipeline_tag"] == "image-classification"
    assert data["license"] == entry["license"]
    assert data["tags"] == ["image-classification", "timm", "mlp-mixer", "mixer-zoo"]
    assert data["datasets"] == card_datasets(entry)
    assert set(data["datasets"]) <= {"imagenet-1k", "imagenet-21k", "cifar10"}  # Hub ids, as timm's own cards use them
    assert f"# Model card for {name}" in card.text
    assert entry["source"]["url"] in card.text
    assert f"hf-hub:{entry['hf_hub_id']}" in card.text
    assert load_manifest()["citations"]["2105.01601"] in card.text
    assert f"arxiv.org/abs/{entry['paper']['arxiv']}" in card.text
    assert "pip install mixer-zoo" in card.text


@pytest.mark.parametrize("name, datasets", [
    ("mixer_b16_zoo.goog_in21k_ft_in1k", ["imagenet-1k"]),  # timm's name, ImageNet-1k weights (provenance)
    ("mixer_l16_zoo.goog_in21k_ft_in1k", ["imagenet-1k"]),
    ("mixer_b16_zoo.goog_in21k", ["imagenet-21k"]),
    ("mixer_b16_zoo.goog_in1k", ["imagenet-1k"]),
    ("mixer_b16_zoo.miil_in21k_ft_in1k", ["imagenet-1k", "imagenet-21k"]),  # as timm's card of the same weights
    ("mixer_b16_zoo.miil_in21k", ["imagenet-21k"]),  # ImageNet-21K-P: no Hub dataset of that name
    ("mixer_s8_zoo.gsam_in1k", ["imagenet-1k"]),
    ("mixer_s8_zoo.gsam_in1k_ft_cifar10", ["cifar10", "imagenet-1k"]),  # MindSpore's fine-tune of the GSAM S/8
])
def test_cards_claim_only_the_data_the_weights_were_trained_on(name, datasets):
    assert ModelCard(render_model_card(weights_entries()[name])).data.to_dict()["datasets"] == datasets


@pytest.mark.parametrize("name", ["mixer_l32_zoo.untrained", "mixer_h14_zoo.untrained"])
def test_untrained_entries_claim_no_data(name):
    entry = weights_entries()[name]
    card = ModelCard(render_model_card(entry))
    assert "datasets" not in card.data.to_dict() and card_datasets(entry) == []
    assert "nothing (no released weights)" in card.text


def test_the_goog_in21k_ft_in1k_cards_say_what_is_known_and_what_is_not():
    text = render_model_card(weights_entries()["mixer_b16_zoo.goog_in21k_ft_in1k"])
    provenance = text[text.index("## Provenance"):]
    assert provenance.startswith("## Provenance\n\n**Likely.**") and "Not settled" in provenance
    assert "pull request #651" in provenance and "b1206099" in provenance


@pytest.mark.parametrize("name, why", [
    ("mixer_b16_zoo.goog_in1k", "tanh approximation of GELU"),
    ("mixer_s8_zoo.gsam_in1k", "timm has no `mixer_s8_zoo` architecture"),
    ("mixer_h14_zoo.untrained", "timm has no `mixer_h14_zoo` architecture"),
    ("mixer_b16_zoo.miil_in21k_ft_in1k", "timm's `mixer_b16_224` also loads"),
])
def test_the_card_says_loading_needs_mixer_zoo_and_why(name, why):
    usage = render_model_card(weights_entries()[name]).split("## Model Usage", 1)[1]
    assert usage.lstrip().startswith("Loading these weights needs mixer-zoo next to timm: `pip install mixer-zoo`")
    assert why in usage and "mixer-zoo timm validate.py" in usage


@pytest.fixture(scope="module")
def google_s32_npz(tmp_path_factory):
    """An official-layout S/32 file with ImageNet's 1000 classes under the name of Google's release."""
    pytest.importorskip("flax")
    from mixer_zoo.reference.flax_mixer import make_official_npz

    return make_official_npz(tmp_path_factory.mktemp("npz") / "Mixer-S_32.npz", "mixer_s32_zoo", 1000, seed=4)


def test_a_local_google_npz_gets_the_manifests_licence_and_another_file_claims_nothing(google_s32_npz, tmp_path):
    from mixer_zoo.tools.convert import convert_npz

    google = ModelCard.load(convert_npz(google_s32_npz, tmp_path / "google", progress=False) / "README.md")
    assert google.data.license == "apache-2.0" and google.data.datasets == ["imagenet-1k"]
    assert "mixer_models/gsam/Mixer-S_32.npz" in google.text and "not by hash" in google.text
    renamed = tmp_path / "mine.npz"
    renamed.write_bytes(google_s32_npz.read_bytes())
    mine = ModelCard.load(convert_npz(renamed, tmp_path / "mine", progress=False) / "README.md")
    assert mine.data.license == "unknown" and mine.data.datasets is None
    assert "what it was trained on is not recorded" in mine.text


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
